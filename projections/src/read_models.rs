//! All read models together: opening them (rebuilding any whose version changed), applying
//! events to each with its own checkpoint, and the queries the API serves from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_domain::{Email, KindUsage, Principal, ResourceId, RoleName};
use roster_eventstore::{Envelope, EventStore, Upcasters};

use crate::codec::Record;
use crate::kv::{
    prefix, Buffered, MemoryTree, PagedTree, Row, Tree, BUFFERED_ROWS_MAX, CHECKPOINT_KEY,
    PAGE_BYTES_MAX, VERSION_KEY,
};
use crate::models::{
    number_key, History, Identity, Invitations, Members, Projection, Resources, Webhooks,
};
use crate::records::{
    ApiKeyRow, HistoryEntry, InvitationRecord, InviteRecord, LinkRecord, MemberRecord,
    MembershipRecord, ResourceRecord, WebhookDeliveryRow, WebhookRow,
};
use crate::ProjectionError;

mod fold;

use fold::{Decoded, Fold};

/// A page of the log with its events decoded.
type DecodedPage = (Vec<Envelope>, Vec<Decoded>);

/// What a reader hands each fold: a page, or why it could not read one.
type PageSent = Result<Arc<DecodedPage>, ProjectionError>;

struct Model {
    projection: Box<dyn Projection>,
    tree: Arc<dyn Tree>,
    checkpoint: AtomicU64,
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The read models of DESIGN section 4, each in its own tree with its own checkpoint.
pub struct ReadModels {
    models: Vec<Model>,
    upcasters: Upcasters,
}

/// Events read from the log at a time.
const PAGE_EVENTS: usize = 4096;
/// Pages each reader reads and decodes ahead of the folds.
const PAGES_AHEAD: usize = 2;
/// Threads reading and decoding the log during a catch-up, each every `READERS`th page:
/// reading (the store's parse of each envelope) and decoding take longer than folding and
/// writing every model, so one reader kept a core busy while the folds waited.
const READERS: usize = 2;
/// Events folded into one batch per model during a catch-up: the open batches hold a few
/// hundred bytes per event (encoded rows, and the typed hot rows) until they are written.
const CHUNK_EVENTS: usize = 65536;

const RESOURCES: usize = 0;
const MEMBERS: usize = 1;
const INVITATIONS: usize = 2;
const HISTORY: usize = 3;
const IDENTITY: usize = 4;
const WEBHOOKS: usize = 5;

fn projections() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(Resources),
        Box::new(Members),
        Box::new(Invitations),
        Box::new(History),
        Box::new(Identity),
        Box::new(Webhooks),
    ]
}

impl ReadModels {
    /// The read models in trees of `db` named `{prefix}{model}`; a model whose stored version
    /// differs from its code's is emptied, to be rebuilt from the log by catching up.
    pub fn open_sled(db: &sled::Db, tree_prefix: &str) -> Result<ReadModels, ProjectionError> {
        ReadModels::open_sled_paged(db, tree_prefix, PAGE_BYTES_MAX)
    }

    /// `open_sled` with pages of `page_bytes_max` bytes (tests use tiny ones, to split often).
    pub fn open_sled_paged(
        db: &sled::Db,
        tree_prefix: &str,
        page_bytes_max: usize,
    ) -> Result<ReadModels, ProjectionError> {
        ReadModels::open(|name| {
            let tree = db.open_tree(format!("{tree_prefix}{name}"))?;
            let paged = Arc::new(PagedTree::open(tree, page_bytes_max)?);
            Ok(Arc::new(Buffered::new(paged, BUFFERED_ROWS_MAX)?) as Arc<dyn Tree>)
        })
    }

    pub fn in_memory() -> ReadModels {
        match ReadModels::open(|_| Ok(Arc::new(MemoryTree::default()) as Arc<dyn Tree>)) {
            Ok(models) => models,
            Err(error) => unreachable!("in-memory trees cannot fail: {error}"),
        }
    }

    /// The read models in trees `open_tree` gives for each model's name: for a host with
    /// storage of its own, and for tests that make a tree fail.
    pub fn open(
        mut open_tree: impl FnMut(&str) -> Result<Arc<dyn Tree>, ProjectionError>,
    ) -> Result<ReadModels, ProjectionError> {
        let mut models = Vec::new();
        for projection in projections() {
            let tree = open_tree(projection.name())?;
            let stored = tree
                .get(VERSION_KEY)?
                .and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)));
            if stored != Some(projection.version()) {
                if stored.is_some() {
                    tracing::info!(
                        model = projection.name(),
                        "read model version changed: rebuilding from the log"
                    );
                }
                tree.clear()?;
                start(tree.as_ref(), projection.version())?;
            }
            let checkpoint = read_checkpoint(tree.as_ref())?;
            models.push(Model {
                projection,
                tree,
                checkpoint: AtomicU64::new(checkpoint),
            });
        }
        Ok(ReadModels {
            models,
            upcasters: Upcasters::new(),
        })
    }

    /// Writes through the rows that wait in memory, so the trees on disk hold every applied
    /// event (a clean stop, and before reading the trees from another handle).
    pub fn flush(&self) -> Result<(), ProjectionError> {
        self.models.iter().try_for_each(|m| m.tree.flush())
    }

    /// The position every read model has applied.
    pub fn checkpoint(&self) -> u64 {
        self.models
            .iter()
            .map(|m| m.checkpoint.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    /// Applies events in log order; each model skips what its checkpoint already holds, so an
    /// event is never applied twice, even after a crash between two models' batches.
    pub fn apply(&self, envelopes: &[Envelope]) -> Result<(), ProjectionError> {
        let decoded = self.decode(envelopes)?;
        let mut fold = Fold::new(&self.models);
        fold.add(envelopes, &decoded)?;
        fold.commit()
    }

    /// A page of stored events parsed and decoded in one pass, each linked to the one before
    /// by its `prev_hash` (as `read_all` checks its pages).
    fn decode_stored(&self, page: &[(u64, Vec<u8>)]) -> Result<DecodedPage, ProjectionError> {
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(page.len());
        let mut decoded = Vec::with_capacity(page.len());
        for (position, bytes) in page {
            let (envelope, event) = fold::decode_stored(&self.upcasters, *position, bytes)?;
            if envelopes
                .last()
                .is_some_and(|previous| previous.hash != envelope.prev_hash)
            {
                return Err(ProjectionError::Corrupt(format!(
                    "position {position}: prev_hash does not match the previous event's hash"
                )));
            }
            envelopes.push(envelope);
            decoded.push(event);
        }
        Ok((envelopes, decoded))
    }

    fn decode(&self, envelopes: &[Envelope]) -> Result<Vec<Decoded>, ProjectionError> {
        envelopes
            .iter()
            .map(|e| fold::decode(&self.upcasters, e))
            .collect()
    }

    /// Empties every model and applies the whole log again, calling `progress` per page.
    pub async fn rebuild(
        &self,
        store: &dyn EventStore,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        for model in &self.models {
            model.tree.clear()?;
            start(model.tree.as_ref(), model.projection.version())?;
            model.checkpoint.store(0, Ordering::Release);
        }
        self.catch_up(store, progress).await
    }

    /// Applies everything the log holds beyond the checkpoint.
    pub async fn catch_up(
        &self,
        store: &dyn EventStore,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let applied = self
            .catch_up_in_chunks(store, CHUNK_EVENTS, progress)
            .await?;
        // Done means written: the last chunk may be waiting in memory.
        self.flush()?;
        Ok(applied)
    }

    /// `catch_up`, writing each model's changes and checkpoint once per `chunk_events` events
    /// (read in pages of at most that many): the chunk bounds the memory the open batches
    /// hold, and tests make it tiny to reach every chunk boundary.
    ///
    /// Four threads share the work, so a rebuild takes both cores: two read and decode the
    /// log a few pages ahead (alternate pages), one folds the history model, and this one
    /// folds the others (about as much work). The models are independent, each with its own
    /// checkpoint, so they may commit their chunks at different moments. The readers drive
    /// the store's reads with the caller's runtime handle (or a runtime of their own outside
    /// one) while this thread blocks: the log's reads never wait on the runtime, and a
    /// catch-up is blocking work anyway (sled writes).
    pub async fn catch_up_in_chunks(
        &self,
        store: &dyn EventStore,
        chunk_events: usize,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let handle = tokio::runtime::Handle::try_current().ok();
        let from = self.checkpoint();
        let page_events = PAGE_EVENTS.min(chunk_events.max(1));
        std::thread::scope(|scope| {
            let (mut history_pages, mut other_pages) = (Vec::new(), Vec::new());
            for reader in 0..READERS {
                let (to_history, from_reader) = std::sync::mpsc::sync_channel(PAGES_AHEAD);
                history_pages.push(from_reader);
                let (to_others, from_reader) = std::sync::mpsc::sync_channel(PAGES_AHEAD);
                other_pages.push(from_reader);
                let handle = handle.clone();
                let stripe = Stripe {
                    from,
                    page_events,
                    first: reader,
                    every: READERS,
                };
                scope.spawn(move || {
                    self.read_pages(handle, store, stripe, &[to_history, to_others]);
                });
            }
            let history_pages = Pages::new(history_pages, from, page_events);
            let other_pages = Pages::new(other_pages, from, page_events);
            let history = scope.spawn(move || {
                self.fold_pages(&[HISTORY], history_pages, chunk_events, &mut |_| {})
            });
            let others = self.fold_pages(
                &[RESOURCES, MEMBERS, INVITATIONS, IDENTITY, WEBHOOKS],
                other_pages,
                chunk_events,
                progress,
            );
            let history = history
                .join()
                .unwrap_or_else(|_| Err(ProjectionError::Io("the history fold panicked".into())));
            others.and(history)?;
            progress(self.checkpoint());
            Ok(self.checkpoint())
        })
    }

    /// Folds the pages received into the models of `group`, committing every `chunk_events`
    /// events and at the end. On an error it returns, dropping the receiver, which stops the
    /// reader and so the other fold, which commits what it folded (each model's batch is
    /// consistent on its own).
    fn fold_pages(
        &self,
        group: &[usize],
        pages: Pages,
        chunk_events: usize,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), ProjectionError> {
        let models = || group.iter().map(|index| &self.models[*index]);
        let mut fold = Fold::new(models());
        // Where this thread's time goes, for `ROSTER_LOG=roster_projections=debug`: the folds
        // either wait for pages (the reader is the slower) or hold the reader up.
        let (mut folding, mut writing, mut waiting) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut since = Instant::now();
        let mut lap = |total: &mut Duration| {
            *total += std::mem::replace(&mut since, Instant::now()).elapsed()
        };
        for page in pages {
            lap(&mut waiting);
            let page = page?;
            fold.add(&page.0, &page.1)?;
            lap(&mut folding);
            if fold.events() >= chunk_events {
                std::mem::replace(&mut fold, Fold::new(models())).commit()?;
                progress(self.checkpoint());
                lap(&mut writing);
            }
        }
        fold.commit()?;
        lap(&mut writing);
        tracing::debug!(
            models = ?group.iter().map(|index| self.models[*index].projection.name()).collect::<Vec<_>>(),
            folding_ms = folding.as_millis(),
            writing_ms = writing.as_millis(),
            waiting_ms = waiting.as_millis(),
            "catch-up folded"
        );
        Ok(())
    }

    /// Sends the pages of `stripe`, decoded, to every fold, until the log ends (a page short
    /// of `page_events`, or none), an error (which it sends too), or a fold is gone.
    fn read_pages(
        &self,
        handle: Option<tokio::runtime::Handle>,
        store: &dyn EventStore,
        stripe: Stripe,
        folds: &[std::sync::mpsc::SyncSender<PageSent>],
    ) {
        let send = |page: PageSent| folds.iter().all(|fold| fold.send(page.clone()).is_ok());
        let own;
        let handle = match handle {
            Some(handle) => handle,
            None => match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => {
                    own = runtime;
                    own.handle().clone()
                }
                Err(error) => {
                    send(Err(ProjectionError::Io(error.to_string())));
                    return;
                }
            },
        };
        let (mut reading, mut decoding, mut sending) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut since = Instant::now();
        let mut lap = |total: &mut Duration| {
            *total += std::mem::replace(&mut since, Instant::now()).elapsed()
        };
        for index in (stripe.first..).step_by(stripe.every) {
            let after = stripe.page_after(index);
            // A store may answer a read with fewer events than asked (it has a limit of its
            // own): read until the page is whole or the log ends.
            let mut page: Vec<(u64, Vec<u8>)> = Vec::new();
            while page.len() < stripe.page_events {
                let read = after.saturating_add(u64::try_from(page.len()).unwrap_or(u64::MAX));
                let wanted = stripe.page_events - page.len();
                match handle.block_on(store.read_all_stored(read, wanted)) {
                    Ok(events) if events.is_empty() => break,
                    Ok(events) if page.is_empty() => page = events,
                    Ok(events) => page.extend(events),
                    Err(error) => {
                        send(Err(error.into()));
                        return;
                    }
                }
            }
            lap(&mut reading);
            if page.is_empty() {
                break;
            }
            let last = page.len() < stripe.page_events;
            let decoded = self.decode_stored(&page).map(Arc::new);
            let failed = decoded.is_err();
            lap(&mut decoding);
            let sent = send(decoded);
            lap(&mut sending);
            if !sent || failed || last {
                break;
            }
        }
        tracing::debug!(
            reading_ms = reading.as_millis(),
            decoding_ms = decoding.as_millis(),
            sending_ms = sending.as_millis(),
            "catch-up read the log"
        );
    }

    /// Every row of every model, by model name: for comparing two sets of read models.
    pub fn dump(&self) -> Result<Vec<(&'static str, Vec<Row>)>, ProjectionError> {
        self.models
            .iter()
            .map(|m| {
                Ok((
                    m.projection.name(),
                    m.tree.scan_prefix(b"", b"", usize::MAX)?,
                ))
            })
            .collect()
    }

    fn tree(&self, index: usize) -> &dyn Tree {
        self.models[index].tree.as_ref()
    }

    fn rows<T: Record>(
        &self,
        index: usize,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, ProjectionError> {
        self.tree(index)
            .scan_prefix(prefix, from, limit)?
            .into_iter()
            .map(|(k, v)| {
                let value = T::decode(&k, &v)?;
                Ok((k, value))
            })
            .collect()
    }

    /// Rows under `prefix` from the key `from` on (from the first when empty), in key order,
    /// each turned into an item or passed over by `convert`, until `limit` items: the page,
    /// and whether more follow. A filter that passes most rows over reads on in chunks, so a
    /// page costs what it finds, not what the prefix holds.
    fn page<T>(
        &self,
        index: usize,
        prefix: &[u8],
        from: Vec<u8>,
        limit: usize,
        mut convert: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, ProjectionError>,
    ) -> Result<(Vec<T>, bool), ProjectionError> {
        const CHUNK_ROWS: usize = 256;
        let mut items = Vec::new();
        let mut from = from;
        loop {
            let rows = self.tree(index).scan_prefix(prefix, &from, CHUNK_ROWS)?;
            for (key, value) in &rows {
                if let Some(item) = convert(key, value)? {
                    if items.len() == limit {
                        return Ok((items, true));
                    }
                    items.push(item);
                }
            }
            match rows.last() {
                Some((last, _)) if rows.len() == CHUNK_ROWS => {
                    // The least key after the last one read.
                    from = last.clone();
                    from.push(0);
                }
                _ => return Ok((items, false)),
            }
        }
    }

    /// The key after which a page on a string-keyed prefix goes on: `prefix ‖ after ‖ 0`.
    fn after_text(prefix: &[u8], after: Option<&str>) -> Vec<u8> {
        after.map_or_else(Vec::new, |after| {
            let mut from = prefix.to_vec();
            from.extend_from_slice(after.as_bytes());
            from.push(0);
            from
        })
    }

    fn row<T: Record>(&self, index: usize, key: &[u8]) -> Result<Option<T>, ProjectionError> {
        self.tree(index)
            .get(key)?
            .map(|bytes| T::decode(key, &bytes))
            .transpose()
    }

    // The queries.

    pub fn resource(
        &self,
        resource: &ResourceId,
    ) -> Result<Option<ResourceRecord>, ProjectionError> {
        self.row(RESOURCES, &Resources::row(resource))
    }

    /// The holders of the resource's highest role, in principal order: at most `limit`.
    pub fn owners(
        &self,
        resource: &ResourceId,
        limit: usize,
    ) -> Result<Vec<Principal>, ProjectionError> {
        let prefix = Resources::owner_prefix(resource);
        self.tree(RESOURCES)
            .scan_prefix(&prefix, b"", limit)?
            .into_iter()
            .map(|(key, _)| {
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                Principal::try_from(name).map_err(|e| {
                    ProjectionError::Corrupt(format!("an owner row of {resource}: {e}"))
                })
            })
            .collect()
    }

    /// What the schema-change rule needs to know about a kind.
    pub fn kind_usage(&self, kind: &str) -> Result<KindUsage, ProjectionError> {
        let rows: Vec<(Vec<u8>, i64)> = self.rows(
            RESOURCES,
            &prefix(&[b"k", kind.as_bytes()]),
            b"",
            usize::MAX,
        )?;
        let mut usage = KindUsage::default();
        for (key, _) in rows {
            let role = key.rsplit(|b| *b == 0).next().unwrap_or_default();
            if let Ok(role) = RoleName::parse(&String::from_utf8_lossy(role)) {
                usage.roles_held.insert(role);
            }
        }
        let resources = self
            .tree(RESOURCES)
            .scan_prefix(&prefix(&[b"r"]), b"", usize::MAX)?;
        usage.has_resources = !usage.roles_held.is_empty()
            || resources.iter().any(|(k, _)| {
                k.get(2..)
                    .is_some_and(|rest| rest.starts_with(format!("{kind}/").as_bytes()))
            });
        Ok(usage)
    }

    pub fn member(
        &self,
        resource: &ResourceId,
        principal: &Principal,
    ) -> Result<Option<MemberRecord>, ProjectionError> {
        self.row(MEMBERS, &Members::by_resource(resource, principal))
    }

    /// A resource's members ordered by principal, `limit` at a time after the principal `after`.
    pub fn members(
        &self,
        resource: &ResourceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<MemberRecord>, ProjectionError> {
        let under = prefix(&[b"r", resource.to_string().as_bytes()]);
        let from = after.map(|p| {
            let mut from = under.clone();
            from.extend_from_slice(p.as_bytes());
            from.push(0);
            from
        });
        let mut items: Vec<MemberRecord> = self
            .rows(
                MEMBERS,
                &under,
                from.as_deref().unwrap_or(b""),
                limit.saturating_add(1),
            )?
            .into_iter()
            .map(|r| r.1)
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.principal.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub fn memberships(
        &self,
        principal: &Principal,
    ) -> Result<Vec<MembershipRecord>, ProjectionError> {
        let rows = self.rows(
            MEMBERS,
            &prefix(&[b"p", principal.as_str().as_bytes()]),
            b"",
            usize::MAX,
        )?;
        Ok(rows.into_iter().map(|r| r.1).collect())
    }

    /// The link or invitation of a number.
    pub fn invite(&self, number: u64) -> Result<Option<InviteRecord>, ProjectionError> {
        self.row(INVITATIONS, &number_key(b"n", number))
    }

    fn invites_of(
        &self,
        resource: &ResourceId,
        tag: &[u8],
    ) -> Result<Vec<InviteRecord>, ProjectionError> {
        let under = prefix(&[b"r", resource.to_string().as_bytes(), tag]);
        let mut records = Vec::new();
        for (key, _) in self
            .tree(INVITATIONS)
            .scan_prefix(&under, b"", usize::MAX)?
        {
            let number = key
                .get(key.len().saturating_sub(8)..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if let Some(record) = number.map(|n| self.invite(n)).transpose()?.flatten() {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// A resource's links or invitations (`tag` `l` or `i`) in number order after `after`,
    /// those `keep` wants, at most `limit`, and whether more follow.
    fn invites_page(
        &self,
        resource: &ResourceId,
        tag: &[u8],
        after: u64,
        limit: usize,
        mut keep: impl FnMut(&InviteRecord) -> bool,
    ) -> Result<(Vec<InviteRecord>, bool), ProjectionError> {
        let under = prefix(&[b"r", resource.to_string().as_bytes(), tag]);
        let mut from = under.clone();
        from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        self.page(INVITATIONS, &under, from, limit, |key, _| {
            let number = key
                .get(key.len().saturating_sub(8)..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            Ok(number
                .map(|n| self.invite(n))
                .transpose()?
                .flatten()
                .filter(|record| keep(record)))
        })
    }

    /// A resource's links in number order after `after`, at most `limit`; more to come?
    pub fn links_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<LinkRecord>, bool), ProjectionError> {
        let (records, more) = self.invites_page(resource, b"l", after, limit, |_| true)?;
        let links = records
            .into_iter()
            .filter_map(|r| match r {
                InviteRecord::Link(link) => Some(link),
                InviteRecord::Email(_) => None,
            })
            .collect();
        Ok((links, more))
    }

    /// A resource's email invitations that `keep` wants, in number order after `after`, at
    /// most `limit`; more to come?
    pub fn invitations_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
        mut keep: impl FnMut(&InvitationRecord) -> bool,
    ) -> Result<(Vec<InvitationRecord>, bool), ProjectionError> {
        let (records, more) = self.invites_page(resource, b"i", after, limit, |r| match r {
            InviteRecord::Email(invitation) => keep(invitation),
            InviteRecord::Link(_) => false,
        })?;
        let invitations = records
            .into_iter()
            .filter_map(|r| match r {
                InviteRecord::Email(invitation) => Some(invitation),
                InviteRecord::Link(_) => None,
            })
            .collect();
        Ok((invitations, more))
    }

    /// A principal's memberships in resource order after the resource `after`, at most
    /// `limit`; more to come?
    pub fn memberships_page(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MembershipRecord>, bool), ProjectionError> {
        let under = prefix(&[b"p", principal.as_str().as_bytes()]);
        let from = Self::after_text(&under, after);
        self.page(MEMBERS, &under, from, limit, |key, value| {
            MembershipRecord::decode(key, value).map(Some)
        })
    }

    /// Registered resources in name order (`kind/id`), of one kind and under one parent when
    /// given, after `after`, at most `limit`; more to come?
    pub fn resources_page(
        &self,
        kind: Option<&str>,
        parent: Option<&ResourceId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ResourceRecord>, bool), ProjectionError> {
        let all = prefix(&[b"r"]);
        let mut under = all.clone();
        if let Some(kind) = kind {
            under.extend_from_slice(kind.as_bytes());
            under.push(b'/');
        }
        let from = Self::after_text(&all, after);
        let from = if from.as_slice() > under.as_slice() {
            from
        } else {
            Vec::new()
        };
        self.page(RESOURCES, &under, from, limit, |key, value| {
            let record = ResourceRecord::decode(key, value)?;
            Ok(parent
                .is_none_or(|p| record.parent.as_ref() == Some(p))
                .then_some(record))
        })
    }

    /// API keys in id order after `after`, at most `limit`; more to come?
    pub fn api_keys_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApiKeyRow>, bool), ProjectionError> {
        let under = prefix(&[b"k"]);
        let from = Self::after_text(&under, after);
        self.page(IDENTITY, &under, from, limit, |_, digest| {
            self.row(
                IDENTITY,
                &Identity::key_by_digest(&String::from_utf8_lossy(digest)),
            )
        })
    }

    /// Webhook subscriptions in id order after `after`, at most `limit`; more to come?
    pub fn webhooks_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<WebhookRow>, bool), ProjectionError> {
        let under = prefix(&[b"w"]);
        let mut from = under.clone();
        from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        self.page(WEBHOOKS, &under, from, limit, |key, value| {
            WebhookRow::decode(key, value).map(Some)
        })
    }

    pub fn links(&self, resource: &ResourceId) -> Result<Vec<LinkRecord>, ProjectionError> {
        Ok(self
            .invites_of(resource, b"l")?
            .into_iter()
            .filter_map(|r| match r {
                InviteRecord::Link(link) => Some(link),
                InviteRecord::Email(_) => None,
            })
            .collect())
    }

    pub fn invitations(
        &self,
        resource: &ResourceId,
    ) -> Result<Vec<InvitationRecord>, ProjectionError> {
        Ok(self
            .invites_of(resource, b"i")?
            .into_iter()
            .filter_map(|r| match r {
                InviteRecord::Email(invitation) => Some(invitation),
                InviteRecord::Link(_) => None,
            })
            .collect())
    }

    /// Every email invitation, in number order (for the mail worker's start).
    pub fn all_invitations(&self) -> Result<Vec<InvitationRecord>, ProjectionError> {
        let rows: Vec<(Vec<u8>, InviteRecord)> =
            self.rows(INVITATIONS, &prefix(&[b"n"]), b"", usize::MAX)?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, record)| match record {
                InviteRecord::Email(invitation) => Some(invitation),
                InviteRecord::Link(_) => None,
            })
            .collect())
    }

    /// Invitations to an email that are still open (pending, or expired but not closed).
    pub fn open_invitations_for(
        &self,
        email: &Email,
    ) -> Result<Vec<InvitationRecord>, ProjectionError> {
        let under = prefix(&[b"e", email.normal().as_bytes()]);
        let mut records = Vec::new();
        for (key, _) in self
            .tree(INVITATIONS)
            .scan_prefix(&under, b"", usize::MAX)?
        {
            let number = key
                .get(key.len().saturating_sub(8)..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if let Some(InviteRecord::Email(invitation)) =
                number.map(|n| self.invite(n)).transpose()?.flatten()
            {
                records.push(invitation);
            }
        }
        Ok(records)
    }

    /// The highest link or invitation number handed out so far.
    pub fn highest_number(&self) -> Result<u64, ProjectionError> {
        Ok(self
            .row(INVITATIONS, Invitations::HIGHEST_NUMBER)?
            .unwrap_or(0))
    }

    fn history_page(
        &self,
        under: Vec<u8>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ProjectionError> {
        let mut from = under.clone();
        from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        Ok(self
            .rows(HISTORY, &under, &from, limit)?
            .into_iter()
            .map(|r| r.1)
            .collect())
    }

    /// A resource's events after a position, oldest first.
    pub fn history(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ProjectionError> {
        self.history_page(
            prefix(&[b"r", resource.to_string().as_bytes()]),
            after,
            limit,
        )
    }

    /// A principal's membership events everywhere, oldest first.
    pub fn principal_history(
        &self,
        principal: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ProjectionError> {
        let under = prefix(&[b"p", principal.as_str().as_bytes()]);
        let mut from = under.clone();
        from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let mut entries = Vec::new();
        for (key, resource) in self.tree(HISTORY).scan_prefix(&under, &from, limit)? {
            let corrupt = || ProjectionError::Corrupt(format!("history row {key:?}"));
            let position = key
                .get(under.len()..)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(corrupt)?;
            let resource = std::str::from_utf8(&resource)
                .ok()
                .and_then(|r| ResourceId::parse(r).ok())
                .ok_or_else(corrupt)?;
            let entry = self
                .row::<HistoryEntry>(HISTORY, &History::by_resource(&resource, position))?
                .ok_or_else(corrupt)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The live API key with this digest (lowercase hex).
    pub fn api_key_by_digest(
        &self,
        digest_hex: &str,
    ) -> Result<Option<ApiKeyRow>, ProjectionError> {
        Ok(self
            .row::<ApiKeyRow>(IDENTITY, &Identity::key_by_digest(digest_hex))?
            .filter(|k| !k.revoked))
    }

    pub fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRow>, ProjectionError> {
        match self.tree(IDENTITY).get(&Identity::key_by_id(key_id))? {
            Some(digest) => self.row(
                IDENTITY,
                &Identity::key_by_digest(&String::from_utf8_lossy(&digest)),
            ),
            None => Ok(None),
        }
    }

    pub fn api_keys(&self) -> Result<Vec<ApiKeyRow>, ProjectionError> {
        Ok(self
            .rows(IDENTITY, &prefix(&[b"d"]), b"", usize::MAX)?
            .into_iter()
            .map(|r| r.1)
            .collect())
    }

    /// The principal that verified this email, if any did.
    pub fn known_principal(&self, email: &Email) -> Result<Option<Principal>, ProjectionError> {
        match self.tree(IDENTITY).get(&Identity::email(email.normal()))? {
            Some(bytes) => Ok(Principal::parse(&String::from_utf8_lossy(&bytes)).ok()),
            None => Ok(None),
        }
    }
}

impl ReadModels {
    pub fn webhook(&self, webhook: u64) -> Result<Option<WebhookRow>, ProjectionError> {
        self.row(WEBHOOKS, &Webhooks::row(webhook))
    }

    pub fn webhooks(&self) -> Result<Vec<WebhookRow>, ProjectionError> {
        Ok(self
            .rows(WEBHOOKS, &prefix(&[b"w"]), b"", usize::MAX)?
            .into_iter()
            .map(|r| r.1)
            .collect())
    }

    /// A webhook's delivery attempts, oldest first, after `after` (a position), at most `limit`.
    pub fn webhook_deliveries(
        &self,
        webhook: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<WebhookDeliveryRow>, ProjectionError> {
        let under = prefix(&[b"d", &webhook.to_be_bytes()]);
        let mut from = under.clone();
        from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        Ok(self
            .rows(WEBHOOKS, &under, &from, limit)?
            .into_iter()
            .map(|r| r.1)
            .collect())
    }
}

/// Marks an emptied tree as holding nothing of the log, in the model's version.
fn start(tree: &dyn Tree, version: u32) -> Result<(), ProjectionError> {
    // Ascending, as `Tree::apply` takes them: "checkpoint" sorts before "version".
    tree.apply(&[
        (CHECKPOINT_KEY, Some(&0u64.to_be_bytes())),
        (VERSION_KEY, Some(&version.to_be_bytes())),
    ])
}

fn read_checkpoint(tree: &dyn Tree) -> Result<u64, ProjectionError> {
    Ok(tree
        .get(CHECKPOINT_KEY)?
        .and_then(|v| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
        .unwrap_or(0))
}

/// The pages one reader reads: pages `first`, `first + every`, ... of `page_events` events
/// each, after position `from`.
#[derive(Clone, Copy)]
struct Stripe {
    from: u64,
    page_events: usize,
    first: usize,
    every: usize,
}

impl Stripe {
    /// The position page `index` starts after.
    fn page_after(&self, index: usize) -> u64 {
        let events = index.saturating_mul(self.page_events);
        self.from
            .saturating_add(u64::try_from(events).unwrap_or(u64::MAX))
    }
}

/// The readers' pages to one fold, in log order: page `i` comes from reader `i % readers`.
/// The pages end at the first page short of `page_events` (the log's end when it was read),
/// or when the reader of the next page has stopped, so a page read later, after more events
/// were appended, is never folded after a gap.
struct Pages {
    readers: Vec<std::sync::mpsc::Receiver<PageSent>>,
    next: usize,
    /// The position the next page must start at.
    expected: u64,
    page_events: usize,
    ended: bool,
}

impl Pages {
    fn new(
        readers: Vec<std::sync::mpsc::Receiver<PageSent>>,
        from: u64,
        page_events: usize,
    ) -> Pages {
        Pages {
            readers,
            next: 0,
            expected: from.saturating_add(1),
            page_events,
            ended: false,
        }
    }
}

impl Iterator for Pages {
    type Item = PageSent;

    fn next(&mut self) -> Option<PageSent> {
        if self.ended {
            return None;
        }
        let reader = self.readers.get(self.next % self.readers.len().max(1))?;
        self.next = self.next.wrapping_add(1);
        let Ok(page) = reader.recv() else {
            self.ended = true;
            return None;
        };
        let Ok(page) = page else {
            self.ended = true;
            return Some(page);
        };
        // Paired with the readers' striping: each page starts where the one before ended.
        let first = page.0.first().map(|e| e.position);
        if first != Some(self.expected) {
            self.ended = true;
            return Some(Err(ProjectionError::Corrupt(format!(
                "a catch-up page starts at {first:?}, not at {}",
                self.expected
            ))));
        }
        self.expected = page
            .0
            .last()
            .map_or(self.expected, |e| e.position.saturating_add(1));
        self.ended = page.0.len() < self.page_events;
        Some(Ok(page))
    }
}
