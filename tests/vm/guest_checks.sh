#!/usr/bin/env bash
# Runs inside the test VM (tests/vm/run -- bash tests/vm/guest_checks.sh): proves the
# stock kernel has what the development machine's lacks, with iproute2 as the witness,
# in two namespaces of its own. One line per check, read by test_vm_kernel.py:
#   CHECK <name> <exit code> <output on one line>
set -u

check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    printf 'CHECK %s %d %s\n' "$name" "$rc" "$(printf '%s' "$out" | tr '\n' ' ')"
}

check kernel uname -r
ip netns add vma
ip netns add vmb

check dummy ip -n vma link add d0 type dummy
check vlan sh -c 'ip -n vma link add link d0 name d0.10 type vlan id 10 &&
                  ip -n vma -d link show d0.10 | grep -o "vlan protocol 802.1Q id 10"'
check bridge_vlan_filtering sh -c 'ip -n vma link add br0 type bridge vlan_filtering 1 &&
                  ip -n vma -d link show br0 | grep -o "vlan_filtering 1"'
check tun ip -n vma tuntap add dev tap0 mode tap
check tbf tc -n vma qdisc add dev d0 root tbf rate 10mbit burst 32kbit latency 50ms

# A veth pair made from the root namespace with each end straight into its namespace:
# the root namespace gets no address, no route and no interface.
ip link add va netns vma type veth peer name vb netns vmb
ip -n vma addr add 10.99.0.1/24 dev va
ip -n vmb addr add 10.99.0.2/24 dev vb
ip -n vma link set va up
ip -n vmb link set vb up
check ping_plain ip netns exec vma ping -c 2 -i 0.2 -W 2 10.99.0.2
check netem tc -n vma qdisc add dev va root netem delay 40ms
check netem_peer tc -n vmb qdisc add dev vb root netem delay 40ms
check netem_show tc -n vma qdisc show dev va
check ping_netem ip netns exec vma ping -c 3 -i 0.2 -W 2 10.99.0.2

ip netns del vma
ip netns del vmb

# pytest inside the VM, from the repository (read-only: no cache, no bytecode).
check pytest_inside /usr/bin/python3 -m pytest -p no:cacheprovider -q tests/vm/guest_pytest_checks.py
