//! Kernel struct layouts from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs read `task_struct` and the cgroup structs behind it, but
//! Rust eBPF has no CO-RE relocations, so the offsets are resolved here, for
//! the running kernel, and handed to the programs as a global
//! ([`KernelOffsets`]). A kernel without BTF still gets every tracepoint
//! field; only the victim's cgroups and parent go missing.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, BtfType, Member, Type};
use oom_common::{
    ChosenTaskOffsets, KernelOffsets, MemcgStatOffsets, OomControlOffsets, MEMCG_STAT_COUNT,
    MEMCG_STAT_ITEMS, OFFSET_UNKNOWN,
};

use crate::arch::SYSCALL_ARGS;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{path} is missing or unreadable: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), \
         so OOM kills are still reported from the tracepoint, but without the \
         victim's cgroup, container and parent"
    )]
    Unavailable {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("BTF of this kernel has no {0}")]
    Missing(String),
    #[error("cannot read BTF type {what}")]
    Type {
        what: String,
        #[source]
        source: btf_rs::Error,
    },
}

/// The running kernel's BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Unavailable {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Resolves every offset the programs need, or says which is missing.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let memory_cgrp_id = self.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
        let subsys = self.member_offset("css_set", "subsys")?;
        let pointer_size = std::mem::size_of::<u64>() as u32;
        Ok(KernelOffsets {
            task_pid: self.member_offset("task_struct", "pid")?,
            task_tgid: self.member_offset("task_struct", "tgid")?,
            task_real_parent: self.member_offset("task_struct", "real_parent")?,
            task_cgroups: self.member_offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: self.member_offset("css_set", "dfl_cgrp")?,
            css_set_memory_css: subsys + memory_cgrp_id * pointer_size,
            css_cgroup: self.member_offset("cgroup_subsys_state", "cgroup")?,
            cgroup_kn: self.member_offset("cgroup", "kn")?,
            kernfs_node_id: self.kernfs_node_id_offset()?,
            task_mm: self.member_offset("task_struct", "mm")?,
            mm_arg_start: self.member_offset("mm_struct", "arg_start")?,
            mm_arg_end: self.member_offset("mm_struct", "arg_end")?,
            memcg_css: self.member_offset("mem_cgroup", "css")?,
            memcg_memory_usage: self.member_offset("mem_cgroup", "memory")?
                + self.member_offset("page_counter", "usage")?,
            memcg_memory_max: self.member_offset("mem_cgroup", "memory")?
                + self.member_offset("page_counter", "max")?,
            task_signal: self.member_offset("task_struct", "signal")?,
            // `atomic_t`: its counter is its first and only member.
            signal_live: self.member_offset("signal_struct", "live")?,
            _pad0: 0,
        })
    }

    /// Offsets into `struct oom_control` (and `mem_cgroup::css`) for the
    /// `oom_kill_process` hooks.
    pub fn oom_control_offsets(&self) -> Result<OomControlOffsets, BtfError> {
        let field = |name| self.member_offset("oom_control", name);
        Ok(OomControlOffsets {
            memcg: field("memcg")?,
            gfp_mask: field("gfp_mask")?,
            order: field("order")?,
            totalpages: field("totalpages")?,
            chosen: field("chosen")?,
            chosen_points: field("chosen_points")?,
            constraint: field("constraint")?,
            memcg_css: self.member_offset("mem_cgroup", "css")?,
        })
    }

    /// Offsets for reading the chosen victim's `task_struct` in the
    /// `oom_kill_process` hooks. Each field resolves on its own: one the
    /// kernel lacks is [`OFFSET_UNKNOWN`] and only its group of
    /// fields goes missing.
    pub fn chosen_task_offsets(&self) -> ChosenTaskOffsets {
        let known = |offset: Result<u32, BtfError>| offset.unwrap_or(OFFSET_UNKNOWN);
        let rss = self.mm_rss_offsets().ok();
        let counter = |index: usize| rss.map_or(OFFSET_UNKNOWN, |rss| rss[index]);
        ChosenTaskOffsets {
            task_comm: known(self.member_offset("task_struct", "comm")),
            task_real_cred: known(self.member_offset("task_struct", "real_cred")),
            // `kuid_t` is `struct { uid_t val; }`: its value is where it is.
            cred_uid: known(self.member_offset("cred", "uid")),
            task_signal: known(self.member_offset("task_struct", "signal")),
            signal_oom_score_adj: known(self.member_offset("signal_struct", "oom_score_adj")),
            mm_total_vm: known(self.member_offset("mm_struct", "total_vm")),
            // `atomic_long_t`: its counter is its first and only member.
            mm_pgtables_bytes: known(self.member_offset("mm_struct", "pgtables_bytes")),
            mm_rss_file: counter(0),
            mm_rss_anon: counter(1),
            mm_rss_shmem: counter(2),
        }
    }

    /// Where in `mm_struct` the values of the rss counters `MM_FILEPAGES`,
    /// `MM_ANONPAGES` and `MM_SHMEMPAGES` are. Before 6.2 `rss_stat` is a
    /// `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }`; since,
    /// an array `struct percpu_counter rss_stat[NR_MM_COUNTERS]` whose
    /// `count` is the value the kernel's report prints.
    fn mm_rss_offsets(&self) -> Result<[u32; 3], BtfError> {
        let what = "mm_struct::rss_stat";
        let mm = self.named("mm_struct", |ty| matches!(ty, Type::Struct(_)))?;
        let (bits, member) = self
            .find_member_of(&mm, "rss_stat", 0)
            .ok_or_else(|| BtfError::Missing(format!("struct {what}")))?;
        let rss_stat = bits / 8;
        let (first, stride) = match self.resolve(&member, what)? {
            Type::Array(array) => {
                let element = self.resolve(&array, what)?;
                let Type::Struct(ref counter) = element else {
                    return Err(BtfError::Missing(format!("a struct array {what}")));
                };
                let (count, _) = self
                    .find_member_of(&element, "count", 0)
                    .ok_or_else(|| BtfError::Missing("struct percpu_counter::count".into()))?;
                (rss_stat + count / 8, counter.size() as u32)
            }
            Type::Struct(_) => {
                let count = self.member_offset("mm_rss_stat", "count")?;
                (rss_stat + count, size_of::<u64>() as u32)
            }
            _ => return Err(BtfError::Missing(format!("a known layout of {what}"))),
        };
        let mut offsets = [0; 3];
        for (offset, counter) in
            offsets
                .iter_mut()
                .zip(["MM_FILEPAGES", "MM_ANONPAGES", "MM_SHMEMPAGES"])
        {
            let index = self
                .enum_value_anywhere(counter)
                .ok_or_else(|| BtfError::Missing(format!("enum value {counter}")))?;
            *offset = first + index * stride;
        }
        Ok(offsets)
    }

    /// Where a memory cgroup's stat counters are, for the `oom_kill_process`
    /// hooks to read the limited cgroup's at the OOM (see
    /// [`MemcgStatOffsets`]); an error where the array is not in the order
    /// of the kernel's enums (6.10 and later), so no slot can be named.
    pub fn memcg_stat_offsets(&self) -> Result<MemcgStatOffsets, BtfError> {
        let what = "mem_cgroup::vmstats";
        let memcg = self.named("mem_cgroup", |ty| matches!(ty, Type::Struct(_)))?;
        let (bits, member) = self
            .find_member_of(&memcg, "vmstats", 0)
            .ok_or_else(|| BtfError::Missing(format!("struct {what}")))?;
        let at = bits / 8;
        let (vmstats, state, len) = match self.resolve(&member, what)? {
            // 5.10: the counters themselves.
            Type::Array(array) => (OFFSET_UNKNOWN, at, array.len()),
            Type::Struct(_) => {
                let (state, len) = self.memcg_vmstats_state()?;
                (OFFSET_UNKNOWN, at + state, len)
            }
            Type::Ptr(_) => {
                let (state, len) = self.memcg_vmstats_state()?;
                (at, state, len)
            }
            _ => return Err(BtfError::Missing(format!("a known layout of {what}"))),
        };
        let all = self.enum_value("memcg_stat_item", "MEMCG_NR_STAT")?;
        if len != all as usize {
            return Err(BtfError::Missing(format!(
                "memory cgroup counters in the order of the kernel's enums ({what} holds {len} of \
                 {all}, in an order set at boot, as on 6.10 and later)"
            )));
        }
        let counter_size = size_of::<u64>() as u32;
        let mut slots = [OFFSET_UNKNOWN; MEMCG_STAT_COUNT];
        // Only these two enums index the array: the same name elsewhere
        // (5.10's `NR_PAGETABLE` is a zone counter) is another counter.
        for (slot, item) in slots.iter_mut().zip(MEMCG_STAT_ITEMS) {
            let index = self
                .enum_value("node_stat_item", item)
                .or_else(|_| self.enum_value("memcg_stat_item", item))
                .ok()
                .filter(|index| *index < all);
            if let Some(index) = index {
                *slot = index * counter_size;
            }
        }
        Ok(MemcgStatOffsets {
            vmstats,
            state,
            slots,
        })
    }

    /// `memcg_vmstats::state`: its offset and length.
    fn memcg_vmstats_state(&self) -> Result<(u32, usize), BtfError> {
        let what = "memcg_vmstats::state";
        let vmstats = self.named("memcg_vmstats", |ty| matches!(ty, Type::Struct(_)))?;
        let (bits, member) = self
            .find_member_of(&vmstats, "state", 0)
            .ok_or_else(|| BtfError::Missing(format!("struct {what}")))?;
        match self.resolve(&member, what)? {
            Type::Array(array) => Ok((bits / 8, array.len())),
            _ => Err(BtfError::Missing(format!("an array {what}"))),
        }
    }

    /// Offsets in `struct pt_regs` of the first three system-call arguments
    /// as the user passed them, still intact when the call returns (which
    /// registers: [`SYSCALL_ARGS`]).
    pub fn syscall_arg_offsets(&self) -> Result<[u32; 3], BtfError> {
        let register_size = size_of::<u64>() as u32;
        let mut offsets = [0; 3];
        for (offset, register) in offsets.iter_mut().zip(SYSCALL_ARGS) {
            *offset =
                self.member_offset("pt_regs", register.member)? + register.index * register_size;
        }
        Ok(offsets)
    }

    /// Whether the BTF-typed `mark_victim` tracepoint passes the victim's
    /// `task_struct` (6.1+) rather than just its pid. Its BTF is the typedef
    /// `btf_trace_mark_victim`: a pointer to `void (void *, <args>...)`.
    pub fn mark_victim_passes_task(&self) -> Result<bool, BtfError> {
        let what = "btf_trace_mark_victim";
        let typedef = self.named(what, |ty| matches!(ty, Type::Typedef(_)))?;
        let proto = self
            .chain(&typedef, what)?
            .into_iter()
            .find_map(|ty| match ty {
                Type::FuncProto(proto) => Some(proto),
                _ => None,
            })
            .ok_or_else(|| BtfError::Missing(format!("function prototype of {what}")))?;
        // Parameter 0 is the tracepoint's `void *__data`.
        let Some(first) = proto.parameters.get(1) else {
            return Ok(false);
        };
        let first = self.resolve(first, what)?;
        let Type::Ptr(ptr) = first else {
            return Ok(false);
        };
        let pointee = self.resolve(&ptr, what)?;
        Ok(match pointee {
            Type::Struct(ref st) => self.btf.resolve_name(st).is_ok_and(|n| n == "task_struct"),
            _ => false,
        })
    }

    fn resolve(&self, ty: &dyn BtfType, what: &str) -> Result<Type, BtfError> {
        self.btf
            .resolve_chained_type(ty)
            .map_err(|source| BtfError::Type {
                what: what.to_owned(),
                source,
            })
    }

    /// The types a type refers to, down the chain (typedef -> ptr -> ...).
    fn chain(&self, ty: &Type, what: &str) -> Result<Vec<Type>, BtfError> {
        let start = ty
            .as_btf_type()
            .ok_or_else(|| BtfError::Missing(what.to_owned()))?;
        Ok(self.btf.chained_type_iter(start).collect())
    }

    fn named(&self, name: &str, kind: impl Fn(&Type) -> bool) -> Result<Type, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .map_err(|source| BtfError::Type {
                what: name.to_owned(),
                source,
            })?
            .into_iter()
            .find(kind)
            .ok_or_else(|| BtfError::Missing(name.to_owned()))
    }

    /// The value of enumerator `member` of whichever enum declares it
    /// (many kernel enums are anonymous).
    pub fn enum_value_anywhere(&self, member: &str) -> Option<u32> {
        // BTF indexes type names only: look through every enum, by id
        // until the ids run out.
        (1..)
            .map_while(|id| self.btf.resolve_type_by_id(id).ok())
            .find_map(|ty| match ty {
                Type::Enum(en) => en
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == member))
                    .map(|m| m.val()),
                _ => None,
            })
    }

    fn enum_value(&self, enum_name: &str, member: &str) -> Result<u32, BtfError> {
        let Type::Enum(en) = self.named(enum_name, |ty| matches!(ty, Type::Enum(_)))? else {
            unreachable!("filtered to enums");
        };
        en.members
            .iter()
            .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == member))
            .map(|m| m.val())
            .ok_or_else(|| BtfError::Missing(format!("enum {enum_name}::{member}")))
    }

    /// Byte offset of `member` in `struct struct_name`, looking through
    /// anonymous structs and unions.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let ty = self.named(struct_name, |ty| matches!(ty, Type::Struct(_)))?;
        self.find_member_of(&ty, member, 0)
            .map(|(bits, _)| bits / 8)
            .ok_or_else(|| BtfError::Missing(format!("struct {struct_name}::{member}")))
    }

    /// `member` of the struct or union `ty` and its bit offset, looking
    /// through anonymous members.
    fn find_member_of(&self, ty: &Type, member: &str, base_bits: u32) -> Option<(u32, Member)> {
        let (Type::Struct(st) | Type::Union(st)) = ty else {
            return None;
        };
        for m in &st.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let offset = base_bits + m.bit_offset();
            if name == member {
                return Some((offset, m.clone()));
            }
            if name.is_empty() {
                let inner = self.btf.resolve_chained_type(m).ok()?;
                if let Some(found) = self.find_member_of(&inner, member, offset) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// `kernfs_node::id` has been a plain u64 (the inode number user space
    /// sees) since 5.5; older kernels had a union this tool does not read.
    fn kernfs_node_id_offset(&self) -> Result<u32, BtfError> {
        let offset = self.member_offset("kernfs_node", "id")?;
        let Type::Struct(st) = self.named("kernfs_node", |ty| matches!(ty, Type::Struct(_)))?
        else {
            unreachable!("filtered to structs");
        };
        let id = st
            .members
            .iter()
            .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == "id"))
            .ok_or_else(|| BtfError::Missing("struct kernfs_node::id".into()))?;
        match self.resolve(id, "kernfs_node::id")? {
            Type::Typedef(_) | Type::Int(_) => Ok(offset),
            _ => Err(BtfError::Missing(
                "a 64-bit kernfs_node::id (kernels before 5.5 are not supported for cgroup ids)"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's own BTF: every kernel this runs on has one, and the
    /// offsets must come out inside their structs and distinct.
    #[test]
    fn resolves_this_kernels_offsets() {
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        let offsets = btf.kernel_offsets().expect("every offset resolves");
        assert_ne!(offsets.task_pid, offsets.task_tgid);
        assert!(
            offsets.task_tgid > offsets.task_pid,
            "tgid follows pid in task_struct"
        );
        assert_eq!(
            offsets.task_tgid - offsets.task_pid,
            4,
            "two pid_t side by side"
        );
        assert!(btf.mark_victim_passes_task().expect("typedef present"));
        let control = btf.oom_control_offsets().expect("oom_control resolves");
        assert_eq!(
            control.memcg_css, 0,
            "css is the first member of mem_cgroup"
        );
        // 6.10+ names the GFP bits; the 6.18 value is what 0x400 was.
        if let Some(bit) = btf.enum_value_anywhere("___GFP_DIRECT_RECLAIM_BIT") {
            assert!(bit < 32, "{bit}");
        }
        assert_eq!(btf.enum_value_anywhere("no_such_enumerator_anywhere"), None);
    }

    /// The memory cgroup counters are placed where the array is in the
    /// order of the kernel's enums, and refused where it is not (6.10+,
    /// this machine's 6.18); 5.10 and 6.1 are proved in the QEMU guests.
    #[test]
    fn places_the_memcg_counters_only_in_the_kernels_own_order() {
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        let (_, len) = btf.memcg_vmstats_state().expect("memcg_vmstats::state");
        let all = btf
            .enum_value_anywhere("MEMCG_NR_STAT")
            .expect("MEMCG_NR_STAT");
        match btf.memcg_stat_offsets() {
            Ok(offsets) => {
                assert_eq!(len, all as usize);
                let anon = btf.enum_value_anywhere("NR_ANON_MAPPED").expect("anon");
                assert_eq!(offsets.slots[0], anon * 8, "{offsets:?}");
                assert!(offsets
                    .slots
                    .iter()
                    .all(|s| *s == OFFSET_UNKNOWN || *s < all * 8));
            }
            Err(error) => {
                assert_ne!(len, all as usize, "{error}");
                assert!(error.to_string().contains("set at boot"), "{error}");
            }
        }
    }

    /// 6.2+ keeps the rss counters in a `percpu_counter` array, indexed by
    /// `MM_FILEPAGES` (0), `MM_ANONPAGES` (1), `MM_SWAPENTS`, `MM_SHMEMPAGES`
    /// (3); the 5.10 layout is proved in the QEMU guests.
    #[test]
    fn resolves_the_chosen_victims_offsets_on_this_kernel() {
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        let offsets = btf.chosen_task_offsets();
        let all = [
            offsets.task_comm,
            offsets.task_real_cred,
            offsets.cred_uid,
            offsets.task_signal,
            offsets.signal_oom_score_adj,
            offsets.mm_total_vm,
            offsets.mm_pgtables_bytes,
            offsets.mm_rss_file,
            offsets.mm_rss_anon,
            offsets.mm_rss_shmem,
        ];
        assert!(!all.contains(&OFFSET_UNKNOWN), "{offsets:?}");
        let stride = offsets.mm_rss_anon - offsets.mm_rss_file;
        assert_eq!(offsets.mm_rss_shmem - offsets.mm_rss_file, 3 * stride);
        let Ok(Type::Struct(counter)) =
            btf.named("percpu_counter", |ty| matches!(ty, Type::Struct(_)))
        else {
            panic!("6.18 has struct percpu_counter");
        };
        assert_eq!(stride as usize, counter.size());
        assert_eq!(
            offsets.mm_rss_file,
            btf.member_offset("mm_struct", "rss_stat").unwrap()
                + btf.member_offset("percpu_counter", "count").unwrap()
        );
    }
}
