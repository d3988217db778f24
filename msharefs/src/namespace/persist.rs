//! The tree as the state file records it, and rebuilt from that record by
//! the next server.

use super::{Kind, Meta, Namespace, Node, INFO, ROOT};
use crate::request::Ino;
use crate::state::record::{NodeKind, NodeRec, Record};

impl Namespace {
    /// What the state file records of `ino`: the node while a name points
    /// at it, else that it is gone (`mshare_info` is never recorded).
    pub fn record(&self, ino: Ino) -> Record {
        let node = match self.nodes.get(&ino) {
            Some(n) if n.is_linked() && ino != INFO => n,
            _ => return Record::Gone(ino.0),
        };
        let kind = match &node.kind {
            Kind::Region(r) => NodeKind::Region(r.kind),
            _ => NodeKind::Dir,
        };
        let m = &node.meta;
        Record::Node(NodeRec {
            ino: ino.0,
            parent: node.parent.0,
            kind,
            perm: m.perm,
            uid: m.uid,
            gid: m.gid,
            charged: node.charged,
            times: [m.atime, m.mtime, m.ctime, m.crtime],
            name: node.name.clone(),
        })
    }

    /// Rebuilds the tree from the nodes a previous server recorded, each
    /// with what it is now; numbers continue from `next_ino`. A node whose
    /// directory is missing, or whose name is taken, is put in the root
    /// (as `NAME.lost-INODE` if need be). Returns what was moved, for the
    /// log. Limits are not checked: what existed stays.
    pub fn adopt(&mut self, nodes: Vec<(NodeRec, Kind)>, next_ino: u64) -> Vec<String> {
        let mut adopted = Vec::new();
        for (rec, kind) in nodes {
            let meta = Meta {
                perm: rec.perm & 0o7777,
                uid: rec.uid,
                gid: rec.gid,
                atime: rec.times[0],
                mtime: rec.times[1],
                ctime: rec.times[2],
                crtime: rec.times[3],
            };
            let ino = Ino(rec.ino);
            if ino == ROOT {
                if let Some(root) = self.nodes.get_mut(&ROOT) {
                    root.meta = meta;
                }
                continue;
            }
            if ino.0 <= INFO.0 || self.nodes.contains_key(&ino) {
                continue;
            }
            let mut node = Node::new(kind, meta, Ino(rec.parent), &rec.name);
            node.charged = rec.charged;
            self.nodes.insert(ino, node);
            self.made += 1;
            *self.made_by.entry(rec.charged).or_default() += 1;
            self.next_ino = self.next_ino.max(ino.0 + 1);
            adopted.push(ino);
        }
        self.next_ino = self.next_ino.max(next_ino);
        let mut moved = Vec::new();
        adopted.sort_unstable();
        for ino in adopted {
            let (parent, name) = {
                let n = &self.nodes[&ino];
                (n.parent, n.name.clone())
            };
            let fits = self.dir(parent).is_ok_and(|d| d.get(&name).is_none());
            let (parent, name) = if fits {
                (parent, name)
            } else {
                let mut lost = name.clone();
                if self.dir(ROOT).is_ok_and(|d| d.get(&name).is_some()) {
                    lost.push(format!(".lost-{}", ino.0));
                }
                moved.push(format!(
                    "inode {} ({name:?}) had no directory {} to go in: it is /{lost:?}",
                    ino.0, parent.0
                ));
                (ROOT, lost)
            };
            if let Ok(d) = self.dir_mut(parent) {
                d.insert(&name, ino);
            }
            let n = self.nodes.get_mut(&ino).expect("adopted above");
            n.parent = parent;
            n.name = name;
        }
        moved
    }
}
