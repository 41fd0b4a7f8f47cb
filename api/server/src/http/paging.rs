//! Paging, one way for every list (DESIGN section 5): `limit` bounded by the server's maximum,
//! `after` the cursor the previous page ended at, and `next` the cursor of the following page,
//! null on the last.

use serde::Deserialize;

use super::config::Paging;
use super::error::{ApiError, ApiResult};

/// `limit` and `after` of a list whose items are numbered or positioned (links, invitations,
/// webhooks and their deliveries, history, events).
#[derive(Debug, Deserialize)]
pub struct NumberPage {
    pub limit: Option<usize>,
    pub after: Option<u64>,
}

/// `limit` and `after` of a list whose items are named (memberships, API keys).
#[derive(Debug, Deserialize)]
pub struct NamePage {
    pub limit: Option<usize>,
    pub after: Option<String>,
}

impl Paging {
    /// The page size `asked` for, bounded to `1..=items_max`; `items_default` when absent.
    pub fn limit(&self, asked: Option<usize>) -> ApiResult<usize> {
        let max = self.items_max.max(1);
        match asked {
            None => Ok(self.items_default.clamp(1, max)),
            Some(0) => Err(ApiError::invalid("limit must be at least 1")),
            Some(n) => Ok(n.min(max)),
        }
    }
}

/// The `next` of a page: the last item's cursor when more follow.
pub fn next<T, C>(items: &[T], more: bool, cursor: impl Fn(&T) -> C) -> Option<C> {
    if more {
        items.last().map(cursor)
    } else {
        None
    }
}

/// A page of `limit` items from `fetched`, which was read with one item more than `limit` to
/// learn whether more follow; and whether they do.
pub fn one_over<T>(mut fetched: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = fetched.len() > limit;
    fetched.truncate(limit);
    (fetched, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded_and_zero_is_refused() {
        let paging = Paging::default();
        assert_eq!(paging.limit(None).ok(), Some(100));
        assert_eq!(paging.limit(Some(3)).ok(), Some(3));
        assert_eq!(paging.limit(Some(usize::MAX)).ok(), Some(1000));
        assert!(paging.limit(Some(0)).is_err());
        let small = Paging {
            items_default: 50,
            items_max: 10,
        };
        assert_eq!(small.limit(None).ok(), Some(10));
        assert_eq!(small.limit(Some(11)).ok(), Some(10));
    }

    #[test]
    fn the_next_cursor_is_the_last_item_only_when_more_follow() {
        let (page, more) = one_over(vec![1, 2, 3], 2);
        assert_eq!((page.as_slice(), more), (&[1, 2][..], true));
        assert_eq!(next(&page, more, |n| n * 10), Some(20));
        let (page, more) = one_over(vec![1, 2], 2);
        assert_eq!(next(&page, more, |n| *n), None);
        assert_eq!(next(&Vec::<u8>::new(), true, |n| *n), None);
    }
}
