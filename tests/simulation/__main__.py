"""Re-run simulated seeds: `python -m tests.simulation --seed 5` prints that run's trace; `--seeds 2000` a summary."""

from __future__ import annotations

import argparse
import logging
import time

import structlog

from tests.simulation.world import SimulationFailed, World


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("--seed", type=int, help="run one seed and print its trace")
    parser.add_argument("--seeds", type=int, default=1000, help="run seeds 0..N-1 and summarise")
    parser.add_argument("--first", type=int, default=0, help="first seed of the range")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    if args.seed is not None:
        world = World(args.seed)
        try:
            world.run()
        except SimulationFailed as failure:
            print("\n".join(world.trace_lines))
            print(f"seed {args.seed} FAILED: {failure}")
            raise SystemExit(1) from failure
        print("\n".join(world.trace_lines))
        print(f"seed {args.seed} ok after {world.steps} steps")
        return
    started, failed = time.perf_counter(), []
    for seed in range(args.first, args.first + args.seeds):
        try:
            World(seed).run()
        except SimulationFailed as failure:
            failed.append(seed)
            print(f"seed {seed}: {failure}")
    print(f"{args.seeds} seeds, {len(failed)} failed, {time.perf_counter() - started:.1f} s")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
