//! Resource amounts: CPU in millicores, memory and disk in MiB.

use serde::{Deserialize, Serialize};

/// An amount of the three resources Bramble schedules.
///
/// On the wire it is three varints in this order: `cpu_millis`, `mem_mib`, `disk_mib` (at most 15 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core: 1000 is one core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Disk in MiB.
    pub disk_mib: u32,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        mem_mib: 0,
        disk_mib: 0,
    };

    /// A resource amount from its three parts.
    pub const fn new(cpu_millis: u32, mem_mib: u32, disk_mib: u32) -> Self {
        Resources {
            cpu_millis,
            mem_mib,
            disk_mib,
        }
    }

    /// True when every part of `self` is at most the same part of `other`.
    pub const fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.mem_mib <= other.mem_mib
            && self.disk_mib <= other.disk_mib
    }

    /// The sum, saturating at `u32::MAX` per part.
    pub const fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
        }
    }

    /// The difference, saturating at zero per part.
    pub const fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
        }
    }

    /// The smaller of each part.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.min(other.cpu_millis),
            mem_mib: self.mem_mib.min(other.mem_mib),
            disk_mib: self.disk_mib.min(other.disk_mib),
        }
    }

    /// True when every part is zero.
    pub const fn is_zero(&self) -> bool {
        self.cpu_millis == 0 && self.mem_mib == 0 && self.disk_mib == 0
    }
}

impl core::fmt::Display for Resources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cpu {}m mem {}M disk {}M",
            self.cpu_millis, self.mem_mib, self.disk_mib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_in_needs_every_part_to_fit() {
        let offer = Resources::new(4000, 4096, 0);
        assert!(Resources::new(2000, 1024, 0).fits_in(&offer));
        assert!(Resources::new(4000, 4096, 0).fits_in(&offer));
        assert!(!Resources::new(4001, 1, 0).fits_in(&offer));
        assert!(!Resources::new(1, 1, 1).fits_in(&offer));
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let a = Resources::new(1, u32::MAX, 5);
        let b = Resources::new(2, 1, 5);
        assert_eq!(a.saturating_sub(&b), Resources::new(0, u32::MAX - 1, 0));
        assert_eq!(a.saturating_add(&b), Resources::new(3, u32::MAX, 10));
    }
}
