"""Peak memory and time of gem_node for each hostile input of issue 8.

    .venv/bin/python benchmarks/bad_inputs.py [--repeats 3] [--model tiny|vit]

The real node runs in its own process (as in the tests, over Fast DDS) with its default
budgets; this process sends each input of test/hostile_inputs.py and waits for the node's
error line (or result). Per case: the node's peak RSS over its idle RSS (VmHWM, reset before
each case), the time from publishing to the answer, and the outcome. Medians over repeats.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))

from hostile_inputs import CASES, error_line, run_case  # noqa: E402
from ros_helpers import TINY_MODEL, NodeProcess, RosClient  # noqa: E402

MODELS = {'tiny': TINY_MODEL, 'vit': ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu')}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--model', choices=sorted(MODELS), default='tiny')
    parser.add_argument('--threads', type=int, default=1, help="the node's OMP_NUM_THREADS")
    args = parser.parse_args()
    client = RosClient()
    with tempfile.TemporaryDirectory() as log_dir:
        node = NodeProcess(
            Path(log_dir) / 'node.log',
            *MODELS[args.model],
            'queries:=[red]',
            'use_compressed:=true',
            'publish_overlay:=false',
            threads=args.threads,
        )
        try:
            node.wait_for_log('loaded model', timeout=300)
            client.wait_matched(compressed=True)
            print('| input | outcome | peak RSS over idle, MiB | seconds |\n|---|---|---|---|')
            for case in CASES:
                outcomes = []
                for _ in range(args.repeats):  # (run_case waits out the log throttle)
                    outcomes.append(run_case(node, client, case, timeout=300))
                    client.clear()
                if case.error:
                    line = error_line(outcomes[-1].log, case.expect) or ''
                    outcome = 'refused: ' + line.split(']: ', 1)[-1][:90]
                else:
                    outcome = 'processed'
                peak = statistics.median(o.peak_over_idle_mib for o in outcomes)
                seconds = statistics.median(o.seconds for o in outcomes)
                print(f'| {case.what} | {outcome} | {peak:.0f} | {seconds:.2f} |', flush=True)
            print(f'\nidle RSS of the node: {outcomes[-1].idle_mib:.0f} MiB ({args.model} model)')
        finally:
            node.stop()
            client.close()


if __name__ == '__main__':
    main()
