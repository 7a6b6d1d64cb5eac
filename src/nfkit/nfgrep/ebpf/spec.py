"""bpf(2) constants as data: commands, map, program, attach and link types, helpers.

The uapi headers installed here (linux-libc-dev 6.1) lack the constants
added since (tcx attach types, BPF_PROG_TYPE_NETFILTER, the newer link
types): these tables are written from the 6.12 kernel's
include/uapi/linux/bpf.h, and the enums are checked against the running
kernel's own BTF (/sys/kernel/btf/vmlinux) by tests/nfgrep/test_ebpf_spec.py
(`btf.enum_values`).  Values are part of the kernel ABI: they never change
once released, so a match on the running kernel is a match everywhere.
"""

from __future__ import annotations

# enum bpf_cmd
CMD = {
    "BPF_MAP_CREATE": 0, "BPF_MAP_LOOKUP_ELEM": 1, "BPF_MAP_UPDATE_ELEM": 2,
    "BPF_MAP_DELETE_ELEM": 3, "BPF_MAP_GET_NEXT_KEY": 4, "BPF_PROG_LOAD": 5,
    "BPF_PROG_TEST_RUN": 10, "BPF_OBJ_GET_INFO_BY_FD": 15, "BPF_PROG_QUERY": 16, "BPF_BTF_LOAD": 18,
    "BPF_LINK_CREATE": 28, "BPF_LINK_UPDATE": 29, "BPF_LINK_DETACH": 34,
}

# enum bpf_map_type (the ones nfkit uses)
MAP_TYPE = {"BPF_MAP_TYPE_HASH": 1, "BPF_MAP_TYPE_ARRAY": 2, "BPF_MAP_TYPE_PERCPU_ARRAY": 6,
            "BPF_MAP_TYPE_LRU_HASH": 9}

# enum bpf_prog_type, complete as of 6.12
PROG_TYPE = {name: i for i, name in enumerate((
    "BPF_PROG_TYPE_UNSPEC", "BPF_PROG_TYPE_SOCKET_FILTER", "BPF_PROG_TYPE_KPROBE",
    "BPF_PROG_TYPE_SCHED_CLS", "BPF_PROG_TYPE_SCHED_ACT", "BPF_PROG_TYPE_TRACEPOINT",
    "BPF_PROG_TYPE_XDP", "BPF_PROG_TYPE_PERF_EVENT", "BPF_PROG_TYPE_CGROUP_SKB",
    "BPF_PROG_TYPE_CGROUP_SOCK", "BPF_PROG_TYPE_LWT_IN", "BPF_PROG_TYPE_LWT_OUT",
    "BPF_PROG_TYPE_LWT_XMIT", "BPF_PROG_TYPE_SOCK_OPS", "BPF_PROG_TYPE_SK_SKB",
    "BPF_PROG_TYPE_CGROUP_DEVICE", "BPF_PROG_TYPE_SK_MSG", "BPF_PROG_TYPE_RAW_TRACEPOINT",
    "BPF_PROG_TYPE_CGROUP_SOCK_ADDR", "BPF_PROG_TYPE_LWT_SEG6LOCAL", "BPF_PROG_TYPE_LIRC_MODE2",
    "BPF_PROG_TYPE_SK_REUSEPORT", "BPF_PROG_TYPE_FLOW_DISSECTOR",
    "BPF_PROG_TYPE_CGROUP_SYSCTL", "BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE",
    "BPF_PROG_TYPE_CGROUP_SOCKOPT", "BPF_PROG_TYPE_TRACING", "BPF_PROG_TYPE_STRUCT_OPS",
    "BPF_PROG_TYPE_EXT", "BPF_PROG_TYPE_LSM", "BPF_PROG_TYPE_SK_LOOKUP",
    "BPF_PROG_TYPE_SYSCALL", "BPF_PROG_TYPE_NETFILTER"))}

# enum bpf_attach_type, complete as of 6.12 (46, 47: tcx; 45: netfilter links)
ATTACH_TYPE = {name: i for i, name in enumerate((
    "BPF_CGROUP_INET_INGRESS", "BPF_CGROUP_INET_EGRESS", "BPF_CGROUP_INET_SOCK_CREATE",
    "BPF_CGROUP_SOCK_OPS", "BPF_SK_SKB_STREAM_PARSER", "BPF_SK_SKB_STREAM_VERDICT",
    "BPF_CGROUP_DEVICE", "BPF_SK_MSG_VERDICT", "BPF_CGROUP_INET4_BIND",
    "BPF_CGROUP_INET6_BIND", "BPF_CGROUP_INET4_CONNECT", "BPF_CGROUP_INET6_CONNECT",
    "BPF_CGROUP_INET4_POST_BIND", "BPF_CGROUP_INET6_POST_BIND", "BPF_CGROUP_UDP4_SENDMSG",
    "BPF_CGROUP_UDP6_SENDMSG", "BPF_LIRC_MODE2", "BPF_FLOW_DISSECTOR", "BPF_CGROUP_SYSCTL",
    "BPF_CGROUP_UDP4_RECVMSG", "BPF_CGROUP_UDP6_RECVMSG", "BPF_CGROUP_GETSOCKOPT",
    "BPF_CGROUP_SETSOCKOPT", "BPF_TRACE_RAW_TP", "BPF_TRACE_FENTRY", "BPF_TRACE_FEXIT",
    "BPF_MODIFY_RETURN", "BPF_LSM_MAC", "BPF_TRACE_ITER", "BPF_CGROUP_INET4_GETPEERNAME",
    "BPF_CGROUP_INET6_GETPEERNAME", "BPF_CGROUP_INET4_GETSOCKNAME",
    "BPF_CGROUP_INET6_GETSOCKNAME", "BPF_XDP_DEVMAP", "BPF_CGROUP_INET_SOCK_RELEASE",
    "BPF_XDP_CPUMAP", "BPF_SK_LOOKUP", "BPF_XDP", "BPF_SK_SKB_VERDICT",
    "BPF_SK_REUSEPORT_SELECT", "BPF_SK_REUSEPORT_SELECT_OR_MIGRATE", "BPF_PERF_EVENT",
    "BPF_TRACE_KPROBE_MULTI", "BPF_LSM_CGROUP", "BPF_STRUCT_OPS", "BPF_NETFILTER",
    "BPF_TCX_INGRESS", "BPF_TCX_EGRESS", "BPF_TRACE_UPROBE_MULTI",
    "BPF_CGROUP_UNIX_CONNECT", "BPF_CGROUP_UNIX_SENDMSG", "BPF_CGROUP_UNIX_RECVMSG",
    "BPF_CGROUP_UNIX_GETPEERNAME", "BPF_CGROUP_UNIX_GETSOCKNAME", "BPF_NETKIT_PRIMARY",
    "BPF_NETKIT_PEER", "BPF_TRACE_KPROBE_SESSION"))}

# enum bpf_link_type, complete as of 6.12
LINK_TYPE = {name: i for i, name in enumerate((
    "BPF_LINK_TYPE_UNSPEC", "BPF_LINK_TYPE_RAW_TRACEPOINT", "BPF_LINK_TYPE_TRACING",
    "BPF_LINK_TYPE_CGROUP", "BPF_LINK_TYPE_ITER", "BPF_LINK_TYPE_NETNS", "BPF_LINK_TYPE_XDP",
    "BPF_LINK_TYPE_PERF_EVENT", "BPF_LINK_TYPE_KPROBE_MULTI", "BPF_LINK_TYPE_STRUCT_OPS",
    "BPF_LINK_TYPE_NETFILTER", "BPF_LINK_TYPE_TCX", "BPF_LINK_TYPE_UPROBE_MULTI",
    "BPF_LINK_TYPE_NETKIT", "BPF_LINK_TYPE_SOCKMAP"))}

# enum bpf_func_id (helpers nfkit's programs call)
HELPER = {"map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3,
          "ktime_get_ns": 5, "skb_load_bytes": 26, "ktime_get_coarse_ns": 160, "loop": 181}
HELPER_NAMES = {v: k for k, v in HELPER.items()}

# map update flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
# tc verdicts
TC_ACT_OK = 0
# struct __sk_buff: offset of mark, size read back by BPF_PROG_TEST_RUN
SKB_MARK = 8
SKB_DATA, SKB_DATA_END = 76, 80  # __sk_buff.data, .data_end: packet pointers when read
SKB_CTX_SIZE = 192
