# Runs in each QEMU guest (tests/tests/qemu.rs), as root, in a busybox
# initramfs with oom-collector and enomem on PATH. Prints one section per
# step: `=== <name> status=<exit status> bytes=<n> ===`, then <n> bytes.
set -u
section() { # name status file
    printf '=== %s status=%s bytes=%s ===\n' "$1" "$2" "$(wc -c < "$3")"
    cat "$3"
    echo
}
# Runs the command "$2..." every 0.1 s until it succeeds, at most $1 times.
wait_until() {
    limit=$1; shift
    n=0
    until "$@"; do
        [ $n -ge $limit ] && return 1
        sleep 0.1; n=$((n + 1))
    done
}

# Starts the collector (events to $1, log to $2, then the options),
# shielded from the OOM killer, and waits until it is attached: fails if it
# never is. Sets $collector.
start_collector() {
    out=$1; log=$2; shift 2
    oom-collector --output "$out" "$@" 2>"$log" &
    collector=$!
    echo -1000 > /proc/$collector/oom_score_adj
    started() { grep -q "collecting OOM events" "$log" || ! kill -0 $collector; }
    wait_until 600 started
    grep -q "collecting OOM events" "$log"
}
# Stops the collector with SIGTERM, as a node does, and prints its events
# ($2) as section $1 and its log ($4) as section $3, with its exit status.
stop_collector() {
    kill -TERM $collector
    wait $collector
    stopped=$?
    touch "$2"
    section "$1" $stopped "$2"
    section "$3" $stopped "$4"
}
# A memory cgroup $1 limited to $2.
limited() {
    mkdir -p "$1"
    echo "$2" > "$1/memory.max"
    [ -e "$1/memory.swap.max" ] && echo 0 > "$1/memory.swap.max"
    return 0
}
# Runs a hog named $1 in cgroup $2 until it dies; appends
# "$1 <pid> <status> <parent pid>" to /tmp/kill_pids.
hog_in() {
    oom-collector hog "$2/cgroup.procs" 2>/tmp/hog_$1.log & p=$!
    wait $p
    echo "$1 $p $? $$" >> /tmp/kill_pids
}

mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control

uname -r > /tmp/uname
section uname 0 /tmp/uname
cat /sys/kernel/tracing/events/oom/mark_victim/format > /tmp/format 2>&1
section mark_victim_format $? /tmp/format

oom-collector probes > /tmp/probes 2>&1
section probes $? /tmp/probes

# Group kill.
oom-collector --output /tmp/events.ndjson --cmdline full 2>/tmp/collector.log &
collector=$!
attached() { grep -q "collecting OOM events" /tmp/collector.log || ! kill -0 $collector; }
wait_until 600 attached
: > /tmp/hogs
G=/sys/fs/cgroup/grp
if grep -q "collecting OOM events" /tmp/collector.log; then
    mkdir $G
    echo 64M > $G/memory.max
    [ -e $G/memory.swap.max ] && echo 0 > $G/memory.swap.max
    echo 1 > $G/memory.oom.group
    # Frozen until all three are in: a hog alone could reach the limit before
    # the others joined, and they would die in an OOM of their own.
    echo 1 > $G/cgroup.freeze
    oom-collector hog $G/cgroup.procs 2>/tmp/hog1.log & h1=$!
    oom-collector hog $G/cgroup.procs 2>/tmp/hog2.log & h2=$!
    oom-collector hog $G/cgroup.procs 2>/tmp/hog3.log & h3=$!
    all_in() { [ "$(wc -l < $G/cgroup.procs)" -ge 3 ]; }
    wait_until 300 all_in || echo "not all hogs joined: $(cat $G/cgroup.procs)" >> /tmp/hogs
    echo 0 > $G/cgroup.freeze
    all_gone() { [ ! -s $G/cgroup.procs ]; }
    if ! wait_until 600 all_gone; then
        echo "hogs still alive after 60 s: $(cat $G/cgroup.procs)" >> /tmp/hogs
        kill -9 $h1 $h2 $h3
    fi
    for hog in "$h1 1" "$h2 2" "$h3 3"; do
        set -- $hog
        wait $1
        status=$?
        echo "hog $1 status=$status $(tr '\n' ' ' < /tmp/hog$2.log)" >> /tmp/hogs
    done
    sleep 1
fi
stop_collector events /tmp/events.ndjson collector_log /tmp/collector.log
rmdir $G 2>/dev/null
section hogs 0 /tmp/hogs

# A memory.oom.group kill of 1,000 processes: 999 sleeps, each with a
# command line past the 2 KiB the kernel side keeps, then a hog. The kernel
# kills them all in one loop, faster than the collector can read.
B=/sys/fs/cgroup/big
: > /tmp/big_kill
if start_collector /tmp/big.ndjson /tmp/big.log --cmdline full; then
    limited $B 256M
    echo 1 > $B/memory.oom.group
    zeros=$(i=0; while [ $i -lt 1050 ]; do printf '0 '; i=$((i + 1)); done)
    # The sleeps are born in the group: this shell joins it to fork them.
    echo $$ > $B/cgroup.procs
    sleepers=""
    i=0
    while [ $i -lt 999 ]; do
        /bin/sleep 1000 $zeros &
        sleepers="$sleepers $!"
        i=$((i + 1))
    done
    echo $$ > /sys/fs/cgroup/cgroup.procs
    echo "sleepers $(wc -l < $B/cgroup.procs)" >> /tmp/big_kill
    oom-collector hog $B/cgroup.procs 2>/tmp/hog_big.log & p=$!
    wait $p
    echo "hog $p $?" >> /tmp/big_kill
    all_lines() { [ "$(grep -c '"action":"oom_kill"' /tmp/big.ndjson)" -ge 1000 ]; }
    uptime_s() { cut -d. -f1 /proc/uptime; }
    give_up=$(($(uptime_s) + 60))
    until all_lines || [ "$(uptime_s)" -ge $give_up ]; do usleep 10000; done
    # CLOCK_BOOTTIME, the kernel's clock of the kills, to 10 ms.
    echo "lines_written_at $(cut -d' ' -f1 /proc/uptime)" >> /tmp/big_kill
    wait $sleepers
    sleep 1
fi
stop_collector big /tmp/big.ndjson big_log /tmp/big.log
rmdir $B 2>/dev/null
section big_kill 0 /tmp/big_kill

# A victim already exiting: a process holding 40 MiB in a 64 MiB cgroup is
# frozen by the v1 freezer (where even SIGKILL waits) and SIGKILLed, so it
# is exiting but keeps its memory. A hog beside it makes the OOM killer
# choose it; finding it exiting, the killer only marks it (which thaws it)
# and sends no kill, then kills the hog at the next OOM.
E=/sys/fs/cgroup/exiting
: > /tmp/exiting_pids
if start_collector /tmp/exiting.ndjson /tmp/exiting.log; then
    mkdir -p /tmp/freezer
    if mount -t cgroup -o freezer freezer /tmp/freezer 2>>/tmp/exiting_pids; then
        limited $E 64M
        mkdir /tmp/freezer/held
        sh -c "echo \$\$ > $E/cgroup.procs && echo \$\$ > /tmp/freezer/held/tasks && exec enomem hold 40" > /tmp/held.out & held=$!
        holding() { grep -q held /tmp/held.out || ! kill -0 $held; }
        wait_until 300 holding
        echo FROZEN > /tmp/freezer/held/freezer.state
        frozen() { grep -q FROZEN /tmp/freezer/held/freezer.state; }
        wait_until 100 frozen || echo "not frozen: $(cat /tmp/freezer/held/freezer.state)" >> /tmp/exiting_pids
        kill -9 $held
        oom-collector hog $E/cgroup.procs 2>/tmp/hog_exiting.log & p=$!
        wait $p
        echo "hog $p $?" >> /tmp/exiting_pids
        echo THAWED > /tmp/freezer/held/freezer.state
        wait $held
        echo "held $held $?" >> /tmp/exiting_pids
        rmdir /tmp/freezer/held
        umount /tmp/freezer
    fi
    sleep 1
fi
stop_collector exiting /tmp/exiting.ndjson exiting_log /tmp/exiting.log
rmdir $E 2>/dev/null
section exiting_pids 0 /tmp/exiting_pids

# Memory cgroup kills: one hog at a 48 MiB limit; two at once in two
# cgroups; a hog in a child of a limited parent.
C=/sys/fs/cgroup
: > /tmp/kill_pids
if start_collector /tmp/kills.ndjson /tmp/kills.log --cmdline full; then
    limited $C/single 48M
    hog_in single $C/single
    limited $C/pair_a 48M
    limited $C/pair_b 48M
    hog_in pair_a $C/pair_a & w1=$!
    hog_in pair_b $C/pair_b & w2=$!
    wait $w1 $w2
    limited $C/nested 48M
    echo +memory > $C/nested/cgroup.subtree_control
    mkdir $C/nested/busy $C/nested/idle
    hog_in nested $C/nested/busy
    sleep 1
fi
stop_collector kills /tmp/kills.ndjson kills_log /tmp/kills.log
rmdir $C/single $C/pair_a $C/pair_b $C/nested/busy $C/nested/idle $C/nested 2>/dev/null
section kill_pids 0 /tmp/kill_pids

# What filled the limit: a 64 MiB cgroup, 40 MiB of it a tmpfs file, and a
# hog; a 112 MiB cgroup where two processes hold 20 MiB each, and a hog.
# The holders' resident kB go to /tmp/holders.
: > /tmp/kill_pids
: > /tmp/holders
if start_collector /tmp/explain.ndjson /tmp/explain.log; then
    limited $C/tmpfs 64M
    mkdir -p /tmp/shm && mount -t tmpfs -o size=100m tmpfs /tmp/shm
    sh -c "echo \$\$ > $C/tmpfs/cgroup.procs && exec dd if=/dev/zero of=/tmp/shm/data bs=1M count=40" 2>/dev/null
    # Past the kernel's limit of 10 OOM reports per 5 s, so that this
    # OOM's report is in the log, to check the collector's figures by.
    sleep 5
    hog_in tmpfs $C/tmpfs
    dmesg > /tmp/explain_dmesg
    rm -f /tmp/shm/data
    limited $C/siblings 112M
    sh -c "echo \$\$ > $C/siblings/cgroup.procs && exec enomem hold 20" > /tmp/held_a & ha=$!
    sh -c "echo \$\$ > $C/siblings/cgroup.procs && exec enomem hold 20" > /tmp/held_b & hb=$!
    both_held() { grep -q held /tmp/held_a && grep -q held /tmp/held_b; }
    wait_until 300 both_held
    for h in $ha $hb; do
        echo "$h $(grep VmRSS /proc/$h/status | tr -s ' ' | cut -d' ' -f2)" >> /tmp/holders
    done
    hog_in siblings $C/siblings
    kill $ha $hb
    wait $ha $hb 2>/dev/null
    sleep 1
fi
stop_collector explain /tmp/explain.ndjson explain_log /tmp/explain.log
umount /tmp/shm 2>/dev/null
rmdir $C/tmpfs $C/siblings 2>/dev/null
section explain_pids 0 /tmp/kill_pids
section holders 0 /tmp/holders
section explain_dmesg 0 /tmp/explain_dmesg

# The DaemonSet's privileges: root with exactly the manifest's capabilities
# ($MANIFEST_CAPS, read from deploy/kubernetes/oom-collector.yaml by the
# test; util-linux's setpriv, not busybox's), under the RLIMIT_MEMLOCK a
# container runtime started by systemd
# gets (8 MiB); then without CAP_SYS_RESOURCE, which kernels before 5.11
# need to raise that limit for the eBPF maps.
caps_run() { # name capabilities
    : > /tmp/kill_pids
    log=/tmp/$1.log
    (ulimit -l 8192; exec /usr/bin/setpriv --bounding-set=-all,$2 --inh-caps=-all \
        oom-collector --output /tmp/$1.ndjson) 2>$log &
    collector=$!
    started() { grep -q "collecting OOM events" "$log" || ! kill -0 $collector; }
    wait_until 600 started
    if grep -q "collecting OOM events" "$log"; then
        echo -1000 > /proc/$collector/oom_score_adj
        limited $C/$1 48M
        hog_in $1 $C/$1
        sleep 1
    fi
    stop_collector $1 /tmp/$1.ndjson ${1}_log $log 2>/dev/null
    rmdir $C/$1 2>/dev/null
    section ${1}_pids 0 /tmp/kill_pids
}
# Debian's kernels set kernel.perf_event_paranoid to 3, which refuses
# tracepoint perf events to all but CAP_SYS_ADMIN: first as the kernel
# boots, then at 2, as the README asks of such nodes.
cat /proc/sys/kernel/perf_event_paranoid > /tmp/paranoid
section perf_event_paranoid 0 /tmp/paranoid
caps_run caps_paranoid "$MANIFEST_CAPS"
echo 2 > /proc/sys/kernel/perf_event_paranoid
caps_run caps_manifest "$MANIFEST_CAPS"
caps_run caps_no_sys_resource "+bpf,+perfmon"

# No BTF for the collector: /dev/null over the kernel's.
: > /tmp/kill_pids
mount -o bind /dev/null /sys/kernel/btf/vmlinux
if start_collector /tmp/nobtf.ndjson /tmp/nobtf.log; then
    limited $C/nobtf 48M
    hog_in nobtf $C/nobtf
    sleep 1
fi
stop_collector nobtf /tmp/nobtf.ndjson nobtf_log /tmp/nobtf.log
umount /sys/kernel/btf/vmlinux
rmdir $C/nobtf 2>/dev/null
section nobtf_pids 0 /tmp/kill_pids

# No tracefs.
umount /sys/kernel/tracing
oom-collector > /tmp/notracefs 2>&1
notracefs_status=$?
mount -t tracefs tracefs /sys/kernel/tracing
section notracefs $notracefs_status /tmp/notracefs

# Allocation failures through the default hooks (fexit where the kernel
# allows), and kernel page-allocation failures: asking for more 2 MiB huge
# pages than the guest has makes the page allocator fail (quietly: the
# pool is filled with __GFP_RETRY_MAYFAIL, so no OOM).
oom-collector --output /tmp/alloc.ndjson --enomem-window 100ms --page-alloc-failures 2>/tmp/alloc.log &
collector=$!
attached() { grep -q "collecting OOM events" /tmp/alloc.log || ! kill -0 $collector; }
wait_until 600 attached
: > /tmp/alloc_pids
enomem mmap 1000 > /dev/null & p=$!; wait $p; echo "mmap $p $?" >> /tmp/alloc_pids
enomem brk 100 > /dev/null & p=$!; wait $p; echo "brk $p $?" >> /tmp/alloc_pids
if [ -e /proc/sys/vm/nr_hugepages ]; then
    sh -c 'echo 4096 > /proc/sys/vm/nr_hugepages' & p=$!; wait $p
    echo "page_alloc $p $? $(cat /proc/sys/vm/nr_hugepages)" >> /tmp/alloc_pids
    echo 0 > /proc/sys/vm/nr_hugepages
fi
sleep 0.5
stop_collector alloc_events /tmp/alloc.ndjson alloc_log /tmp/alloc.log
section alloc_pids 0 /tmp/alloc_pids

# Where this kernel has no fexit on system calls, the same counts through
# the option that works everywhere: the raw syscall tracepoint.
if ! grep -Eq "^fexit/__(x64|arm64)_sys_mmap +active$" /tmp/probes; then
    : > /tmp/alloc_tp_pids
    if start_collector /tmp/alloc_tp.ndjson /tmp/alloc_tp.log --alloc-failures tracepoint \
        --enomem-window 100ms; then
        enomem mmap 1000 > /dev/null & p=$!; wait $p; echo "mmap $p $?" >> /tmp/alloc_tp_pids
        enomem brk 100 > /dev/null & p=$!; wait $p; echo "brk $p $?" >> /tmp/alloc_tp_pids
        sleep 0.5
    fi
    stop_collector alloc_tp_events /tmp/alloc_tp.ndjson alloc_tp_log /tmp/alloc_tp.log
    section alloc_tp_pids 0 /tmp/alloc_tp_pids
fi

oom-collector selftest > /tmp/selftest 2>&1
section selftest $? /tmp/selftest

# A global OOM, last: a hog in the root cgroup runs the guest out of
# memory (no swap), beside two cgroups without limits holding 150 and
# 60 MiB.
: > /tmp/kill_pids
if start_collector /tmp/global.ndjson /tmp/global.log; then
    mkdir -p $C/hungry_a $C/hungry_b
    sh -c "echo \$\$ > $C/hungry_a/cgroup.procs && exec enomem hold 150" > /tmp/held_a & ga=$!
    sh -c "echo \$\$ > $C/hungry_b/cgroup.procs && exec enomem hold 60" > /tmp/held_b & gb=$!
    both_held() { grep -q held /tmp/held_a && grep -q held /tmp/held_b; }
    wait_until 300 both_held
    hog_in global $C
    kill $ga $gb
    wait $ga $gb 2>/dev/null
    sleep 1
fi
stop_collector global /tmp/global.ndjson global_log /tmp/global.log
section global_pids 0 /tmp/kill_pids

dmesg > /tmp/dmesg
section dmesg 0 /tmp/dmesg
