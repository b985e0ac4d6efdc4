"""Start-up of a one-image `python -m fruitnet.predict`, against `bench/plain_predict.py` (torch,
torchvision and Pillow doing the same) -> bench/STARTUP.md.

    python bench/startup.py                        # 5 rounds -> bench/STARTUP.md
    python bench/startup.py --rounds 2 --out logs/startup.md
    python bench/startup.py --before /tmp/old      # also time another source tree's predict

Each round runs both commands once, in fresh processes, alternately, and times each from start to
exit (`benchlib.common.run_logged`); one untimed round first reads the files into the page cache.
The checkpoint is the basic CNN (norm=false, 100 px, random weights: the time does not depend on
them) for the class folders of the image's dataset, written once here. The ratio is
median(predict) / median(plain). Also timed: `python -c "import fruitnet.predict"` alone, with
whether it loaded Lightning. The report's prose is bench/templates/startup/report.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

# The bench's code (benchlib) lives beside this file
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import REPO, find_dataset, machine, run_logged, shown_args, template  # noqa: E402

from fruitnet.data.transforms import preprocess_spec  # noqa: E402
from fruitnet.files import write_text  # noqa: E402

IMPORT_CHECK = "import sys, fruitnet.predict; print('lightning.pytorch' in sys.modules)"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image", default=None, help="default: the first fruits-360-sample Test image")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "bench" / "STARTUP.md"))
    p.add_argument("--before", default=None, help="a source tree whose predict is timed as well")
    p.add_argument(
        "--before-name", default="the --before source tree", help="its name in the report"
    )
    args = p.parse_args()
    if args.image is None:
        test = find_dataset("fruits-360-sample", None, splits=("Test",)) / "Test"
        args.image = str(sorted(test.glob("*/*.jpg"))[0])
    return args


def write_checkpoint(path: Path, class_names: list[str]) -> Path:
    """A basic-CNN checkpoint as training writes it (hparams + state_dict), random weights."""
    from fruitnet.module import ClassifierModule

    module = ClassifierModule(
        model_name="cnn", num_classes=len(class_names), input_size=100,
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        class_names=class_names, preprocess=preprocess_spec(False, 100),
    )  # fmt: skip
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def timed(commands: dict[str, list[str]], rounds: int, work: Path, env: dict) -> dict:
    """Seconds per command and round, the commands alternating; stops on a failed command."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(rounds + 1):  # round 0: page cache, untimed
        for name, cmd in commands.items():
            log = work / f"{name}_{round_}.log"
            code, seconds = run_logged(cmd, log, env=env)
            if code != 0:
                sys.exit(
                    f"{shlex.join(cmd)} failed ({code}); see {log}:\n{log.read_text()[-2000:]}"
                )
            if round_:
                times[name].append(seconds)
    return times


def main() -> None:
    args = parse_args()
    image = Path(args.image).resolve()
    work = Path(tempfile.mkdtemp(prefix="fruitnet_startup_"))
    names = sorted(p.name for p in image.parent.parent.iterdir() if p.is_dir())
    ckpt = write_checkpoint(work / "cnn.ckpt", names)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    py = sys.executable
    predict = [py, "-m", "fruitnet.predict", f"ckpt_path={ckpt}", f"input={image}",
               f"hydra.run.dir={work / 'run'}"]  # fmt: skip
    commands = {
        "plain": [py, str(REPO / "bench" / "plain_predict.py"), str(ckpt), str(image)],
        "predict": predict,
        "import": [py, "-c", IMPORT_CHECK],
    }
    if args.before:
        # From its own folder: `python -m` puts the working directory first on sys.path
        commands["before"] = ["env", "-C", str(Path(args.before).resolve()), *predict]
    load_start = os.getloadavg()[0]
    times = timed(commands, args.rounds, work, env)
    median = {name: statistics.median(t) for name, t in times.items()}
    lightning = (work / f"import_{args.rounds}.log").read_text().strip().splitlines()[-1]
    places = {work: "<work>", image.parent.parent.parent: "<data>"}
    facts = machine()
    before = ""
    if args.before:
        before = template("startup/before", tree=args.before_name,
                          before_s=f"{median['before']:.2f}",
                          speedup=f"{median['before'] / median['predict']:.2f}")  # fmt: skip
    report = template(
        "startup/report",
        cpu=facts["cpu"], cores=facts["cores"], threads=facts["threads"],
        python=facts["python"], torch=facts["torch"], rounds=args.rounds,
        plain_s=f"{median['plain']:.2f}", predict_s=f"{median['predict']:.2f}",
        ratio=f"{median['predict'] / median['plain']:.2f}", import_s=f"{median['import']:.2f}",
        lightning="yes" if lightning == "True" else "no",
        plain_all=", ".join(f"{t:.2f}" for t in times["plain"]),
        predict_all=", ".join(f"{t:.2f}" for t in times["predict"]),
        load=f"{load_start:.2f} -> {os.getloadavg()[0]:.2f}", before=before,
        predict_cmd=shlex.join(["python", *shown_args(predict[1:], places)]),
        command=shlex.join(["python", *shown_args(sys.argv, {REPO: "."})]),
    )  # fmt: skip
    write_text(Path(args.out), report + "\n")
    print(report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
