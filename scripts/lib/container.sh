# shellcheck shell=bash
# Throwaway systemd containers for scripts/sandbox and scripts/bench: the host's
# /usr booted by systemd-nspawn --volatile=yes (root on a tmpfs), the container's
# system bus exposed on a host socket, a host dir bound as /etc/systemd/system.
# Same container as tests/integration/support.rs. Source it, then:
#
#   ct_preflight                 # root, systemd-nspawn (installed if missing)
#   ct_init NAME                 # own cgroups, leftovers of a killed run, temp dir
#   trap 'ct_cleanup' EXIT ...   # the caller owns the traps
#   ct_boot [UNIT_DIR [NSPAWN_ARG...]]   # boots and waits until systemd is up
#
# and use $ct_bus, $ct_unit_dir, $ct_leader, $ct_tmp, $ct_state. Errors exit 1
# (the caller's EXIT trap then runs ct_cleanup). Never run /lib/systemd/systemd
# directly on the host: without --volatile it would take over the host's /tmp.

ct_name=""
ct_tmp=""
ct_bus=""
ct_unit_dir=""
ct_nspawn=""
ct_leader=""
ct_state=""
ct_cgroups=()

ct_alive() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }

ct_preflight() {
    [ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
    if ! command -v systemd-nspawn >/dev/null; then
        apt-get update -q && apt-get install -y -q systemd-container
    fi
}

ct_init() {
    ct_name=$1
    # Own cgroup(s): nspawn --keep-unit from a shared cgroup would put all containers
    # (sandbox, bench and test containers alike) into one /payload tree.
    ct_cgroups=()
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
        ct_cgroups=("/sys/fs/cgroup/$ct_name")
    else
        local h
        for h in systemd unified; do
            if [ -e "/sys/fs/cgroup/$h/cgroup.procs" ]; then ct_cgroups+=("/sys/fs/cgroup/$h/$ct_name"); fi
        done
    fi
    local cg
    for cg in "${ct_cgroups[@]}"; do
        [ -e "$cg" ] || continue
        if [ -n "$(find "$cg" -name cgroup.procs -exec cat {} +)" ]; then
            echo "container $ct_name is running ($cg has processes)" >&2; exit 1
        fi
        # Leftovers of a SIGKILLed run (its container died with it, via PDEATHSIG).
        find "$cg" -depth -type d -exec rmdir {} +
        rm -rf "/tmp/$ct_name".??????
    done
    ct_tmp=$(mktemp -d "/tmp/$ct_name.XXXXXX")
    mkdir "$ct_tmp/dbus" "$ct_tmp/preset"
}

# Idempotent; safe to call before ct_boot or after a failed boot.
ct_cleanup() {
    if [ -n "$ct_nspawn" ] && ct_alive "$ct_nspawn"; then
        echo "stopping $ct_name..." >&2
        # --kill-signal=SIGKILL: nspawn SIGKILLs the container's PID 1, cleans up, exits.
        kill -TERM "$ct_nspawn"
        for _ in $(seq 300); do ct_alive "$ct_nspawn" || break; sleep 0.01; done
        if ct_alive "$ct_nspawn"; then
            [ -z "$ct_leader" ] || kill -KILL "$ct_leader" 2>/dev/null || true
            kill -KILL "$ct_nspawn" 2>/dev/null || true
        fi
    fi
    [ -z "$ct_nspawn" ] || wait "$ct_nspawn" 2>/dev/null || true
    ct_nspawn=""
    local cg
    for cg in "${ct_cgroups[@]}"; do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    [ -z "$ct_tmp" ] || rm -rf "$ct_tmp"
}

ct_boot() {
    local unit_dir=${1:-}
    [ $# -eq 0 ] || shift
    local cg
    for cg in "${ct_cgroups[@]}"; do mkdir "$cg"; done
    if [ -z "$unit_dir" ]; then
        unit_dir="$ct_tmp/units"
        mkdir "$unit_dir"
    fi
    [ -d "$unit_dir" ] || { echo "unit dir $unit_dir does not exist" >&2; exit 1; }
    ct_unit_dir=$(realpath "$unit_dir")
    # Every boot is a "first boot" (empty volatile /etc); without this, systemd's preset-all
    # would enable the host's installed services and write symlinks into the unit dir.
    echo 'disable *' > "$ct_tmp/preset/00-orch-sandbox.preset"
    ct_bus="unix:path=$ct_tmp/dbus/system_bus_socket"

    # setpriv: if the calling script is SIGKILLed, the kernel still sends nspawn SIGTERM.
    (
        for cg in "${ct_cgroups[@]}"; do echo "$BASHPID" > "$cg/cgroup.procs"; done
        exec setpriv --pdeathsig TERM -- systemd-nspawn --volatile=yes --directory=/ --boot \
            --machine="$ct_name" --register=no --keep-unit --kill-signal=SIGKILL \
            --console=read-only --link-journal=no \
            --bind="$ct_tmp/dbus:/run/dbus" --bind="$ct_unit_dir:/etc/systemd/system" \
            --bind-ro="$ct_tmp/preset:/etc/systemd/system-preset" \
            "$@" \
            -- systemd.firstboot=off systemd.unit=multi-user.target
    ) </dev/null >"$ct_tmp/nspawn.log" 2>&1 &
    ct_nspawn=$!

    ct_state=""
    for _ in $(seq 600); do
        ct_alive "$ct_nspawn" || { cat "$ct_tmp/nspawn.log" >&2; echo "systemd-nspawn exited" >&2; exit 1; }
        ct_state=$(busctl --address="$ct_bus" --timeout=2 get-property org.freedesktop.systemd1 \
            /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager SystemState 2>/dev/null || true)
        case "$ct_state" in *'"running"'*|*'"degraded"'*) break ;; esac
        sleep 0.1
    done
    case "$ct_state" in
        *'"running"'*|*'"degraded"'*) ;;
        *) cat "$ct_tmp/nspawn.log" >&2; echo "not ready after 60 s (state: ${ct_state:-no answer})" >&2; exit 1 ;;
    esac
    ct_leader=$(ps --ppid "$ct_nspawn" -o pid= | head -n1 | tr -d ' ')
}
