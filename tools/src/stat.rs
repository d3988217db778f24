//! `msharectl stat`: one line of what msharefs regions and KSM save.

use indicatif::BinaryBytes;
use serde::Serialize;

use crate::regions::RegionReport;

/// The figures of the `stat` line, in bytes.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// Regions in the mount.
    pub regions: usize,
    /// Memory they hold.
    pub allocated: u64,
    /// Distinct processes mapping any of them.
    pub mappers: usize,
    /// Estimated page tables of those mappings.
    pub page_tables: u64,
    /// What 4 KiB pages would cost for the same resident memory.
    pub page_tables_4k: u64,
    /// The difference: what the regions' page sizes and sharing save.
    pub page_tables_saved: u64,
    /// What KSM saved (`general_profit`), if the kernel has KSM.
    pub ksm_saved: Option<u64>,
    /// `page_tables_saved` plus `ksm_saved`.
    pub saved: u64,
    /// The processes that could not be inspected (their number in JSON).
    #[serde(serialize_with = "crate::procfs::count")]
    pub uninspected: Vec<u32>,
    /// Regions that stopped servers kept with no server now (`msharectl
    /// kept`), in every state directory.
    pub kept_regions: usize,
    /// Memory those regions hold.
    pub kept_bytes: u64,
}

impl Stat {
    /// The figures of `regions` (with their usage), KSM's saving, how
    /// many processes could not be inspected, and the regions and bytes
    /// kept with no server.
    pub fn of(
        regions: &[RegionReport],
        ksm_saved: Option<u64>,
        uninspected: Vec<u32>,
        kept: (usize, u64),
    ) -> Stat {
        let usages = regions.iter().filter_map(|r| r.usage.as_ref());
        let mut pids: Vec<u32> = usages
            .clone()
            .flat_map(|u| u.mappers.iter().map(|m| m.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        let page_tables = usages.clone().map(|u| u.page_tables).sum();
        let page_tables_4k: u64 = usages.clone().map(|u| u.page_tables_4k).sum();
        let page_tables_saved = page_tables_4k.saturating_sub(page_tables);
        Stat {
            regions: regions.len(),
            allocated: regions.iter().filter_map(|r| r.allocated).sum(),
            mappers: pids.len(),
            page_tables,
            page_tables_4k,
            page_tables_saved,
            ksm_saved,
            saved: page_tables_saved + ksm_saved.unwrap_or(0),
            uninspected,
            kept_regions: kept.0,
            kept_bytes: kept.1,
        }
    }

    /// The line, sizes in binary units.
    pub fn line(&self) -> String {
        let ksm = self
            .ksm_saved
            .map_or("not available".into(), |b| BinaryBytes(b).to_string());
        let kept = match self.kept_regions {
            0 => String::new(),
            n => format!(
                "; {n} regions kept with no server hold {} (msharectl kept)",
                BinaryBytes(self.kept_bytes)
            ),
        };
        format!(
            "{} regions, {} allocated, mapped by {} processes; page tables {} instead of {} \
             (saved {}); KSM saved {ksm}; saved in all {}{kept}\n",
            self.regions,
            BinaryBytes(self.allocated),
            self.mappers,
            BinaryBytes(self.page_tables),
            BinaryBytes(self.page_tables_4k),
            BinaryBytes(self.page_tables_saved),
            BinaryBytes(self.saved),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_regions_save_nothing_but_ksm() {
        let s = Stat::of(&[], Some(4096), Vec::new(), (0, 0));
        assert_eq!((s.regions, s.mappers, s.saved), (0, 0, 4096));
        assert_eq!(
            s.line(),
            "0 regions, 0 B allocated, mapped by 0 processes; page tables 0 B instead of 0 B \
             (saved 0 B); KSM saved 4.00 KiB; saved in all 4.00 KiB\n"
        );
        assert!(Stat::of(&[], None, Vec::new(), (0, 0))
            .line()
            .contains("KSM saved not available"));
    }

    #[test]
    fn kept_regions_with_no_server_are_counted() {
        let line = Stat::of(&[], None, Vec::new(), (3, 3 << 30)).line();
        assert!(
            line.trim_end()
                .ends_with("; 3 regions kept with no server hold 3.00 GiB (msharectl kept)"),
            "{line}"
        );
    }
}
