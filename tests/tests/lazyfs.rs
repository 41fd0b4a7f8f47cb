//! The power-cut filesystem (`roster_tests::lazyfs`) against a plain model: random writes,
//! truncations, file and directory syncs, renames, removals and power cuts (whole, or with the
//! last unsynced write of each file torn), all through the real mount with `std::fs`. After
//! every step each name lists and reads back what the model says.
//!
//! Needs root and `/dev/fuse` (as CI has); without them it fails saying so.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;
use roster_tests::lazyfs::{Mounted, Tear};

/// Names in the root and in the directory `d`.
const NAMES: [&str; 5] = ["a", "b", "c", "d/x", "d/y"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        name: usize,
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        name: usize,
        len: u64,
    },
    Sync {
        name: usize,
    },
    SyncDir {
        sub: bool,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Remove {
        name: usize,
    },
    Cut {
        tear: Option<u32>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (name.clone(), 0..96u64, proptest::collection::vec(any::<u8>(), 1..48))
            .prop_map(|(name, offset, data)| Op::Write { name, offset, data }),
        1 => (name.clone(), 0..128u64).prop_map(|(name, len)| Op::Truncate { name, len }),
        2 => name.clone().prop_map(|name| Op::Sync { name }),
        2 => any::<bool>().prop_map(|sub| Op::SyncDir { sub }),
        1 => (name.clone(), name.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => name.prop_map(|name| Op::Remove { name }),
        1 => proptest::option::of(0..=1000u32).prop_map(|tear| Op::Cut { tear }),
    ]
}

/// A file as the model knows it.
#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    synced: Vec<u8>,
    /// The last change since the last sync, if it was a write: where, and what.
    last_write: Option<(u64, Vec<u8>)>,
    changed: bool,
}

/// The model: two directories of names to inode numbers, now and as last synced.
#[derive(Debug, Default)]
struct Model {
    inodes: BTreeMap<u64, Inode>,
    live: [BTreeMap<String, u64>; 2],
    synced: [BTreeMap<String, u64>; 2],
    next: u64,
}

fn dir_of(name: &str) -> usize {
    usize::from(name.starts_with("d/"))
}

impl Model {
    fn ino(&self, name: &str) -> Option<u64> {
        self.live[dir_of(name)].get(name).copied()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { name, offset, data } => {
                let name = NAMES[*name];
                let ino = match self.ino(name) {
                    Some(ino) => ino,
                    None => {
                        self.next += 1;
                        self.inodes.insert(self.next, Inode::default());
                        self.live[dir_of(name)].insert(name.to_string(), self.next);
                        self.next
                    }
                };
                let inode = self.inodes.get_mut(&ino).expect("an inode");
                let (start, end) = (to_usize(*offset), to_usize(*offset) + data.len());
                if inode.live.len() < end {
                    inode.live.resize(end, 0);
                }
                inode.live[start..end].copy_from_slice(data);
                inode.last_write = Some((*offset, data.clone()));
                inode.changed = true;
            }
            Op::Truncate { name, len } => {
                if let Some(ino) = self.ino(NAMES[*name]) {
                    let inode = self.inodes.get_mut(&ino).expect("an inode");
                    inode.live.resize(to_usize(*len), 0);
                    inode.last_write = None;
                    inode.changed = true;
                }
            }
            Op::Sync { name } => {
                if let Some(ino) = self.ino(NAMES[*name]) {
                    let inode = self.inodes.get_mut(&ino).expect("an inode");
                    inode.synced = inode.live.clone();
                    inode.last_write = None;
                    inode.changed = false;
                }
            }
            Op::SyncDir { sub } => {
                let dir = usize::from(*sub);
                self.synced[dir] = self.live[dir].clone();
            }
            Op::Rename { from, to } => {
                let (from, to) = (NAMES[*from], NAMES[*to]);
                if let Some(ino) = self.ino(from) {
                    if from != to {
                        self.live[dir_of(from)].remove(from);
                        self.live[dir_of(to)].insert(to.to_string(), ino);
                    }
                }
            }
            Op::Remove { name } => {
                let name = NAMES[*name];
                self.live[dir_of(name)].remove(name);
            }
            Op::Cut { tear } => {
                self.live = self.synced.clone();
                let reached: Vec<u64> = self
                    .synced
                    .iter()
                    .flat_map(|d| d.values().copied())
                    .collect();
                self.inodes.retain(|ino, _| reached.contains(ino));
                for inode in self.inodes.values_mut() {
                    if let (Some(thousandths), Some((offset, data)), true) =
                        (tear, &inode.last_write, inode.changed)
                    {
                        let kept = data.len() * to_usize(u64::from(*thousandths)) / 1000;
                        let (start, end) = (to_usize(*offset), to_usize(*offset) + kept);
                        if kept > 0 {
                            if inode.synced.len() < end {
                                inode.synced.resize(end, 0);
                            }
                            inode.synced[start..end].copy_from_slice(&data[..kept]);
                        }
                    }
                    inode.live = inode.synced.clone();
                    inode.last_write = None;
                    inode.changed = false;
                }
            }
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("small")
}

/// Does `op` on the mounted filesystem, as a program would.
fn perform(mounted: &Mounted, op: &Op) {
    let root = mounted.path();
    match op {
        Op::Write { name, offset, data } => {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(root.join(NAMES[*name]))
                .expect("opens");
            file.write_all_at(data, *offset).expect("writes");
        }
        Op::Truncate { name, len } => {
            if let Ok(file) = OpenOptions::new().write(true).open(root.join(NAMES[*name])) {
                file.set_len(*len).expect("truncates");
            }
        }
        Op::Sync { name } => {
            if let Ok(file) = OpenOptions::new().write(true).open(root.join(NAMES[*name])) {
                file.sync_data().expect("syncs");
            }
        }
        Op::SyncDir { sub } => {
            let dir = if *sub {
                root.join("d")
            } else {
                root.to_path_buf()
            };
            std::fs::File::open(dir)
                .expect("opens the directory")
                .sync_all()
                .expect("syncs the directory");
        }
        Op::Rename { from, to } => {
            let _ = std::fs::rename(root.join(NAMES[*from]), root.join(NAMES[*to]));
        }
        Op::Remove { name } => {
            let _ = std::fs::remove_file(root.join(NAMES[*name]));
        }
        Op::Cut { tear } => {
            let tear = tear.map_or(Tear::None, Tear::Part);
            mounted.power_cut(tear).expect("the cut");
        }
    }
}

/// Every name reads back as the model says, and no other name exists.
fn check(mounted: &Mounted, model: &Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let root = mounted.path();
    for name in NAMES {
        let read = std::fs::read(root.join(name)).ok();
        let expected = model.ino(name).map(|ino| model.inodes[&ino].live.clone());
        prop_assert_eq!(read, expected, "{} after step {} ({:?})", name, step, op);
    }
    let listed = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    let mut root_names: Vec<String> = model.live[0].keys().cloned().collect();
    root_names.push("d".into());
    root_names.sort();
    prop_assert_eq!(listed(root), root_names, "the root after step {}", step);
    let sub: Vec<String> = model.live[1]
        .keys()
        .map(|n| n.trim_start_matches("d/").to_string())
        .collect();
    prop_assert_eq!(listed(&root.join("d")), sub, "d after step {}", step);
    Ok(())
}

fn mounted_fresh() -> (tempfile::TempDir, Mounted) {
    let temp = tempfile::tempdir().expect("temporary directory");
    let mounted = Mounted::mount(&temp.path().join("backing"), &temp.path().join("mnt"))
        .unwrap_or_else(|e| {
            panic!(
                "cannot mount the test filesystem ({e}): this test needs root and /dev/fuse \
                 (.ci/run installs fuse3)"
            )
        });
    let d = mounted.path().join("d");
    std::fs::create_dir(&d).expect("mkdir d");
    std::fs::File::open(mounted.path())
        .and_then(|root| root.sync_all())
        .expect("syncs the root");
    (temp, mounted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_filesystem_keeps_exactly_what_was_synced(ops in proptest::collection::vec(op(), 1..40)) {
        let (_temp, mounted) = mounted_fresh();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            perform(&mounted, op);
            model.apply(op);
            check(&mounted, &model, step, op)?;
        }
    }
}

/// The plain case spelled out: a file synced but never synced into its directory is gone
/// after a cut; one whose directory was synced keeps what its own sync kept, no more.
#[test]
fn a_file_needs_its_own_sync_and_its_directorys() {
    let (_temp, mounted) = mounted_fresh();
    let root = mounted.path().to_path_buf();
    std::fs::write(root.join("a"), b"first").expect("writes");
    std::fs::File::open(root.join("a"))
        .and_then(|f| f.sync_all())
        .expect("syncs a");
    let report = mounted.power_cut(Tear::None).expect("cut");
    assert!(!root.join("a").exists(), "its directory was never synced");
    assert_eq!(report.nodes_removed, 1);

    std::fs::write(root.join("b"), b"kept").expect("writes");
    std::fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .expect("syncs the root");
    std::fs::File::open(root.join("b"))
        .and_then(|f| f.sync_all())
        .expect("syncs b");
    let file = OpenOptions::new()
        .write(true)
        .open(root.join("b"))
        .expect("opens");
    file.write_all_at(b"-and-more", 4).expect("writes");
    assert_eq!(
        std::fs::read(root.join("b")).expect("reads"),
        b"kept-and-more"
    );
    mounted.power_cut(Tear::Part(500)).expect("cut");
    assert_eq!(
        std::fs::read(root.join("b")).expect("reads"),
        b"kept-and",
        "half of the last unsynced write survives a torn cut"
    );
    assert!(mounted.syncs() >= 4);
}
