#!/usr/bin/env python3
"""Instruction profile of a kernel path from a QEMU execution log.

QEMU 7.2 has no TCG plugins in Debian's build, but it can log every
translated block (`-d in_asm`) and every block it executes (`-d exec` with
`nochain`, so chained blocks are logged too). Counting executions per block
and multiplying by the block's instruction count gives exact instructions per
address; symbolising with the kernel's ELF (and `addr2line` for inlined
frames) tells where they go.

Record a benchmark (one CPU, icount so the figures match the benchmark's):

    cargo build -p orrery-runner
    qemu-system-x86_64 -accel tcg -cpu max -m 512M -machine q35 -smp 1 \\
        -icount shift=0,sleep=off -nographic -no-reboot -serial stdio \\
        -display none -monitor none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \\
        -kernel kernel/target/x86_64-unknown-none/release/orrery-kernel \\
        -d exec,nochain,in_asm -D /tmp/qemu.log -append "bench=mailbox_call_reply icount"

then

    scripts/kprofile.py /tmp/qemu.log --ops 2000 --from-user
    scripts/kprofile.py /tmp/qemu.log --ops 2000 --from-user --inside dispatcher_loop

`--ops` divides every figure by the number of operations the benchmark ran;
`--from-user` starts counting at the first block executed in ring 3 (skips
boot); `--inside NAME` breaks the named function down by inlined call chain.
"""

import argparse
import bisect
import collections
import re
import subprocess
import sys

KERNEL = "kernel/target/x86_64-unknown-none/release/orrery-kernel"
TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/([0-9a-f]+)/")
KERNEL_HALF = 0xFFFF_8000_0000_0000


def symbols(kernel):
    listing = subprocess.run(["nm", "-C", "--defined-only", kernel], capture_output=True, text=True, check=True)
    table = []
    for line in listing.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16), parts[2]))
    table.sort()
    return table


def parse(log, from_user):
    """Executions per block start address, and instructions per block."""
    executions = collections.Counter()
    length = {}
    start = None
    counting = not from_user
    with open(log, errors="replace") as lines:
        for line in lines:
            if line.startswith("Trace"):
                match = TRACE.match(line)
                if not match:
                    continue
                pc = int(match.group(1), 16)
                # The low two bits of QEMU's hflags are the CPL.
                if not counting and int(match.group(2), 16) & 3 == 3:
                    counting = True
                if counting:
                    executions[pc] += 1
            elif line.startswith("IN:"):
                start = None
            elif line.startswith("0x") and ":" in line[:20]:
                pc = int(line.split(":")[0], 16)
                if start is None:
                    start = pc
                    length[start] = 0
                length[start] += 1
    return executions, length


def inline_chains(kernel, addresses):
    if not addresses:
        return {}
    output = subprocess.run(
        ["addr2line", "-a", "-f", "-i", "-C", "-e", kernel] + [hex(a) for a in addresses],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    chains, current, frames = {}, None, []
    for line in output:
        if line.startswith("0x"):
            if current is not None:
                chains[current] = frames
            current, frames = int(line, 16), []
        else:
            frames.append(line)
    if current is not None:
        chains[current] = frames
    return chains


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log")
    parser.add_argument("--kernel", default=KERNEL)
    parser.add_argument("--ops", type=float, default=1.0, help="operations the benchmark ran")
    parser.add_argument("--from-user", action="store_true", help="count from the first ring-3 block on")
    parser.add_argument("--inside", help="break this function down by inlined call chain")
    parser.add_argument("--depth", type=int, default=3, help="frames of each chain to show")
    parser.add_argument("--top", type=int, default=40)
    arguments = parser.parse_args()

    table = symbols(arguments.kernel)
    starts = [address for address, _ in table]

    def symbol(pc):
        if pc < KERNEL_HALF:
            return "<user or boot code>"
        index = bisect.bisect_right(starts, pc) - 1
        return table[index][1] if index >= 0 else "?"

    executions, length = parse(arguments.log, arguments.from_user)
    per_symbol = collections.Counter()
    for pc, count in executions.items():
        per_symbol[symbol(pc)] += count * length.get(pc, 1)
    total = sum(per_symbol.values())
    print(f"{total / arguments.ops:10.1f} instructions per operation in all")
    if arguments.inside is None:
        for name, count in per_symbol.most_common(arguments.top):
            print(f"{count / arguments.ops:10.1f}  {name[:140]}")
        return
    inside = [pc for pc in executions if arguments.inside in symbol(pc)]
    chains = inline_chains(arguments.kernel, inside)
    per_chain = collections.Counter()
    for pc in inside:
        frames = chains.get(pc, [])
        names = [
            frames[i].split("::")[-1][:40] + "@" + frames[i + 1].split("/")[-1] for i in range(0, len(frames) - 1, 2)
        ]
        key = " < ".join(names[-arguments.depth :][::-1]) if names else "?"
        per_chain[key] += executions[pc] * length.get(pc, 1)
    for key, count in per_chain.most_common(arguments.top):
        print(f"{count / arguments.ops:10.1f}  {key}")


if __name__ == "__main__":
    sys.exit(main())
