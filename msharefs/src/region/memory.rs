//! A region's hold on its memory: giving it up, and the memory file's
//! name, which changes whenever who may reach the region does.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::Region;
use crate::backing::{BackingStore, Owner};
use crate::fail::Fail;

/// What [`Region::take_memory`] gives up: the server's descriptor, to
/// close outside the locks, and the memory file's name, to remove.
#[derive(Debug)]
pub struct Released {
    /// The server's descriptor of the memory.
    pub file: Arc<OwnedFd>,
    /// The kept file's name, if it is kept.
    pub name: Option<String>,
}

impl Region {
    /// Gives up the server's hold on the memory (after the last name and
    /// open are gone) and returns it: the caller drops it after its locks,
    /// because closing the last descriptor of a large file frees its pages
    /// right there. Mappings made by clients keep their pages until unmapped.
    #[must_use = "drop the memory outside the namespace lock"]
    pub fn take_memory(&self) -> Option<Released> {
        let mut st = self.state.lock();
        st.backing_id = None;
        st.objects.clear();
        self.home.placement.release(self.id);
        let file = st.file.take()?;
        Some(Released {
            file,
            name: st.name.take(),
        })
    }

    /// The name of the memory file in the state directory (`None` for
    /// volatile or released memory).
    pub fn memory_name(&self) -> Option<String> {
        self.state.lock().name.clone()
    }

    /// Gives the memory file `owner`'s access and a new secret name, so
    /// that no name given out before opens it (after a change of what
    /// decides access to the region). Nothing for volatile memory.
    pub fn rekey(&self, store: &BackingStore, owner: Owner) -> Result<(), Fail> {
        let mut st = self.state.lock();
        let (Some(file), Some(name)) = (&st.file, &st.name) else {
            return Ok(());
        };
        let new = crate::backing::mirror(file, owner)
            .and_then(|()| store.rename(self.kind, self.id.0, name))
            .map_err(|e| {
                Fail::with(
                    e,
                    format!(
                        "cannot rename the memory file {name} of inode {}: {e}",
                        self.id.0
                    ),
                )
            })?;
        st.name = Some(new);
        Ok(())
    }
}
