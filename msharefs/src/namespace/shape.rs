//! Which rules a directory gives the regions made in it ([`Shape`]).

use super::{Namespace, ROOT};
use crate::region::Shape;
use crate::request::Ino;

impl Namespace {
    /// The shape of regions made in directory `dir`.
    pub fn shape_in(&self, dir: Ino) -> Shape {
        let (Ok(d), Ok(root)) = (self.node(dir), self.node(ROOT)) else {
            return Shape::Aligned;
        };
        Shape::of_dir(
            &d.name,
            dir != ROOT && d.parent == ROOT,
            d.meta.uid == root.meta.uid,
        )
    }
}
