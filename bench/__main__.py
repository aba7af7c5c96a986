"""Run every benchmark and print one table: `python3 -m bench [--quick]`.

Each figure is a median over several runs, and each speed figure is a ratio against
a baseline measured in the same run on the same machine (never an absolute target).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench import backup, health_latency, memory, parallel, prepare_scale, release


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer sizes and rounds: keeps the scripts working (CI)",
    )
    quick = parser.parse_args().quick
    sizes, rounds, waits = ((1, 5), 1, 10) if quick else ((1, 5, 10), 3, 30)
    scales = ((500, 2_000),) if quick else ((50, 20_000), (500, 20_000), (2_000, 20_000))
    volumes, many = ((16, 128), 10) if quick else ((256, 1024), 50)
    began = time.perf_counter()
    rows: list[tuple[str, str, str, str]] = []
    for n in sizes:
        r = release.measure(n, rounds, with_ansible=n == 5)
        rows.append(
            (
                f"release of {n} service(s): engine / bash",
                f"{r['engine_s']:.2f} s / {r['bash_s']:.2f} s",
                f"{r['ratio']:.2f}x",
                "<= 1.05 at 5 and 10",
            )
        )
        if r["ansible_s"]:
            rows.append(
                (
                    f"release of {n} service(s): engine / ansible",
                    f"{r['engine_s']:.2f} s / {r['ansible_s']:.2f} s",
                    f"{r['engine_s'] / r['ansible_s']:.2f}x",
                    "<= 0.4",
                )
            )
    for packages, commits in scales:
        p = prepare_scale.measure(packages, commits, 3)
        rows.append(
            (
                f"plan of 50 changed services, {packages} packages, {commits} commits",
                f"{p['plan_s']:.2f} s (git diff alone {p['diff_s'] * 1000:.0f} ms)",
                f"{p['ratio']:.0f}x",
                "<= 1 s",
            )
        )
    for b in backup.measure(volumes, rounds):
        engine_s = max(b["engine_s"], 0.01)
        rows.append(
            (
                f"backup of a {b['mib']:.0f} MiB volume: tar / engine",
                f"{b['tar_s']:.2f} s / {b['engine_s']:.2f} s, engine {b['rss_mib']:.0f} MiB",
                f"{b['tar_s'] / engine_s:.2f}x",
                ">= 0.9x tar, flat memory",
            )
        )
        rows.append(
            (
                f"backup of a {b['mib']:.0f} MiB volume: tar + fsync / engine (also fsyncs)",
                f"{b['tar_fsync_s']:.2f} s / {b['engine_s']:.2f} s",
                f"{b['tar_fsync_s'] / engine_s:.2f}x",
                ">= 0.9x tar",
            )
        )
        fill_s = max(b["fill_s"], 0.01)
        whole_s = fill_s + b["check_s"]
        rows.append(
            (
                f"restore of a {b['mib']:.0f} MiB volume: rm, tar -x / engine's fill",
                f"{b['untar_s']:.2f} s / {b['fill_s']:.2f} s",
                f"{b['untar_s'] / fill_s:.2f}x",
                ">= 0.9x tar",
            )
        )
        rows.append(
            (
                f"restore of a {b['mib']:.0f} MiB volume: rm, tar -x, sync / engine's fill,"
                " then its sync beside its read-back check",
                f"{b['untar_sync_s']:.2f} s / {whole_s:.2f} s",
                f"{b['untar_sync_s'] / whole_s:.2f}x",
                ">= 0.9x tar",
            )
        )
    m = memory.measure(many)
    rows.append(
        (
            f"engine's peak RSS: release of 1 / {many} services",
            f"{m['one_mib']:.0f} MiB / {m['many_mib']:.0f} MiB",
            "",
            "<= 150 MB at 50",
        )
    )
    width, wide = 4, (5 if quick else 10)
    w = parallel.measure(wide, width, rounds)
    rows.append(
        (
            f"release of {wide} services: --parallel {width} / --parallel 1",
            f"{w['parallel_s']:.2f} s / {w['serial_s']:.2f} s",
            f"{w['ratio']:.2f}x",
            "<= 0.4 at 10",
        )
    )
    h = health_latency.measure(waits)
    rows.append(
        (
            "health detection latency (median, max)",
            f"{h['median_ms']:.0f} ms, {h['max_ms']:.0f} ms",
            "",
            "median <= 100 ms",
        )
    )
    print(
        f"\n{'quick' if quick else 'full'} mode, {platform.node()}: {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {rounds} round(s) per release size\n"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("benchmark", "measured", "ratio", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\n(took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
