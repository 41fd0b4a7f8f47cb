//! Paging, one way for every list (DESIGN section 5): `limit` bounded by the server's maximum,
//! `after` the cursor the previous page ended at, and `next` the cursor of the following page,
//! null on the last.

use serde::Deserialize;

use super::error::{ApiError, ApiResult};

/// The most items one page answers, whatever `limit` asks: a limit on what a response holds
/// (and the server reads for it). A constant until `ServerConfig` has a setting for it.
pub const PAGE_ITEMS_MAX: usize = 1000;

/// Items on a page when the request gives no `limit`.
pub const PAGE_ITEMS_DEFAULT: usize = 100;

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

/// The page size `asked` for, bounded to `1..=PAGE_ITEMS_MAX`; `PAGE_ITEMS_DEFAULT` when absent.
pub fn limit(asked: Option<usize>) -> ApiResult<usize> {
    match asked {
        None => Ok(PAGE_ITEMS_DEFAULT.min(PAGE_ITEMS_MAX)),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) => Ok(n.min(PAGE_ITEMS_MAX)),
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
        assert_eq!(limit(None).ok(), Some(PAGE_ITEMS_DEFAULT));
        assert_eq!(limit(Some(3)).ok(), Some(3));
        assert_eq!(limit(Some(usize::MAX)).ok(), Some(PAGE_ITEMS_MAX));
        assert!(limit(Some(0)).is_err());
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
