"""Where the server's RDSKD distillation time goes, and batched vs looped teachers.

Run from the repository root::

    python benchmarks/profile_distillation.py            # 7 repeats per cell
    python benchmarks/profile_distillation.py --quick    # 3 repeats

Two tables, for LeNet-5 on 1x28x28 (MNIST) and the small CNN on 3x32x32 (CIFAR-10),
each with the generator width 64 (this project's default) and 128 (DAFL's released
size), synthetic batch 64 (the default ``batch_size``):

1. One generator step and one student step split into their parts (K = 10 teachers,
   plain-loop ensemble, the default): generator forward, generator backward + Adam,
   teacher ensemble forward + backward to the input, the RDSKD loss and the rest; and
   sampling, teacher inference, student forward + backward + Adam.
2. Batched ensemble (``torch.func`` ``vmap`` over stacked weights) vs the plain loop
   over K = 1, 5, 10, 20 client models: generator step, student step and the teacher
   alone, as ``loop / batched`` ratios (> 1: batched is faster).

Every figure is the median of ``--repeats`` timed runs after one warm-up. Actions that
are compared are timed interleaved (loop, batched, loop, batched, ...) so that load from
other processes on a shared machine hits both alike; compare ratios from the same run,
not absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from fedrdskd.kd.ensemble import TeacherEnsemble, ensemble_weights
from fedrdskd.kd.generators import DAFLGenerator
from fedrdskd.kd.losses import kd_loss
from fedrdskd.kd.rdskd import RDSKDSynthesizer
from fedrdskd.models import build_model

CPU = torch.device("cpu")
LATENT_DIM = 100
NUM_CLASSES = 10
BATCH = 64
BREAKDOWN_MEMBERS = 10
MEMBER_COUNTS = (1, 5, 10, 20)
WIDTHS = (64, 128)
MODELS = (("lenet5", (1, 28, 28)), ("cnn", (3, 32, 32)))


# ---- timing ------------------------------------------------------------------------
def paired_medians(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each action; one warm-up each, then the actions interleaved."""
    for action in actions.values():
        action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for repeat in range(repeats):
        shift = repeat % len(names)  # rotate the order so no action is always first
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            actions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ---- the pieces of a distillation round ----------------------------------------------
def model_fn_for(name: str, shape: tuple[int, int, int]) -> Callable[[], nn.Module]:
    return lambda: build_model(name, num_classes=NUM_CLASSES, image_shape=shape)


def make_teacher(name: str, shape: tuple[int, int, int], members: int,
                 batched: bool) -> TeacherEnsemble:
    """K seeded client models with equal weights, as the server's teacher."""
    model_fn = model_fn_for(name, shape)
    states = []
    for seed in range(members):
        torch.manual_seed(seed)
        states.append(model_fn().state_dict())
    weights = ensemble_weights("num-examples", num_examples=[1] * members,
                               label_counts=None, num_classes=NUM_CLASSES)
    return TeacherEnsemble(model_fn, states, weights, device=CPU, batched=batched)


def make_synthesizer(shape: tuple[int, int, int], width: int) -> RDSKDSynthesizer:
    torch.manual_seed(0)
    generator = DAFLGenerator(LATENT_DIM, shape, channels=width)
    return RDSKDSynthesizer(generator, latent_dim=LATENT_DIM, reference_interval=120,
                            batch_size=BATCH, device=CPU, seed=0)


def make_student(name: str, shape: tuple[int, int, int]) -> tuple[nn.Module,
                                                                 torch.optim.Optimizer]:
    torch.manual_seed(100)
    student = model_fn_for(name, shape)()
    student.eval()  # as the distillation runs it (BatchNorm keeps the clients' statistics)
    return student, torch.optim.Adam(student.parameters(), lr=1e-3)


def teacher_forward_backward(teacher: TeacherEnsemble, images: torch.Tensor) -> None:
    """The teacher's share of a generator step: logits, then gradients to the input."""
    leaf = images.detach().requires_grad_(True)
    torch.autograd.grad(teacher(leaf).logsumexp(dim=1).sum(), leaf)


def student_step(student: nn.Module, optimizer: torch.optim.Optimizer,
                 synthesizer: RDSKDSynthesizer, teacher: TeacherEnsemble) -> None:
    """One student update exactly as :func:`fedrdskd.kd.distill.run_distillation` does."""
    batch = synthesizer.sample(BATCH)
    loss = synthesizer.student_loss(student(batch.images), teacher, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ---- table 1 -------------------------------------------------------------------------
def step_breakdown(name: str, shape: tuple[int, int, int], width: int,
                   repeats: int) -> dict[str, float]:
    """Seconds of a generator step, a student step and of their parts (K = 10, loop)."""
    teacher = make_teacher(name, shape, BREAKDOWN_MEMBERS, batched=False)
    synthesizer = make_synthesizer(shape, width)
    generator = synthesizer.generator
    student, optimizer = make_student(name, shape)
    # the generator's own optimiser stands in for its Adam step in the parts below
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
    latents = torch.randn(BATCH, LATENT_DIM)
    images = synthesizer.sample(BATCH).images
    upstream = torch.randn_like(images)
    teacher_logits = teacher(images).detach()

    def generator_forward() -> None:
        generator.train()
        generator(latents)

    def generator_forward_backward_adam() -> None:
        generator.train()
        generator_optimizer.zero_grad(set_to_none=True)
        (generator(latents) * upstream).sum().backward()
        generator_optimizer.step()

    def student_forward_backward_adam() -> None:
        optimizer.zero_grad(set_to_none=True)
        kd_loss(student(images), teacher_logits, synthesizer.temperature).backward()
        optimizer.step()

    def teacher_inference() -> None:
        with torch.no_grad():
            teacher(images)

    return paired_medians({
        "generator-step": lambda: synthesizer.generator_step(teacher, student),
        "G-fwd": generator_forward,
        "G-fwd-bwd-adam": generator_forward_backward_adam,
        "T-fwd-bwd": lambda: teacher_forward_backward(teacher, images),
        "student-step": lambda: student_step(student, optimizer, synthesizer, teacher),
        "sample": lambda: synthesizer.sample(BATCH),
        "T-inference": teacher_inference,
        "S-fwd-bwd-adam": student_forward_backward_adam,
    }, repeats)


def print_breakdown(repeats: int) -> None:
    print(f"\n## 1. One distillation step, split (ms, median; batch {BATCH}, "
          f"K={BREAKDOWN_MEMBERS} teachers, plain-loop ensemble)")
    print("generator step = G fwd + G bwd/Adam + T fwd/bwd-to-input + loss/rest")
    print("student step   = sample (G fwd, no grad) + T inference + S fwd/bwd/Adam + rest")
    header = (f"{'model':<7} {'width':>5} | {'gen step':>8} {'G fwd':>13} {'G bwd+Adam':>13} "
              f"{'T fwd+bwd':>13} {'loss/rest':>13} | {'stud step':>9} {'sample':>13} "
              f"{'T infer':>13} {'S f/b/Adam':>13} {'rest':>13}")
    print(header)
    for name, shape in MODELS:
        for width in WIDTHS:
            t = step_breakdown(name, shape, width, repeats)
            generator_parts = [t["G-fwd"], t["G-fwd-bwd-adam"] - t["G-fwd"], t["T-fwd-bwd"]]
            generator_parts.append(t["generator-step"] - sum(generator_parts))
            student_parts = [t["sample"], t["T-inference"], t["S-fwd-bwd-adam"]]
            student_parts.append(t["student-step"] - sum(student_parts))

            def cells(parts: list[float], total: float) -> str:
                return " ".join(f"{1e3 * p:>7.1f} ({100 * p / total:>3.0f}%)" for p in parts)

            print(f"{name:<7} {width:>5} | {1e3 * t['generator-step']:>8.1f} "
                  f"{cells(generator_parts, t['generator-step'])} | "
                  f"{1e3 * t['student-step']:>9.1f} {cells(student_parts, t['student-step'])}")


# ---- table 2 -------------------------------------------------------------------------
def loop_vs_batched(name: str, shape: tuple[int, int, int], width: int, members: int,
                    repeats: int) -> dict[str, float]:
    """Generator step, student step and teacher fwd+bwd, each with both ensembles."""
    teachers = {mode: make_teacher(name, shape, members, batched=mode == "batched")
                for mode in ("loop", "batched")}
    synthesizers = {mode: make_synthesizer(shape, width) for mode in teachers}
    students = {mode: make_student(name, shape) for mode in teachers}
    images = synthesizers["loop"].sample(BATCH).images
    actions = {}
    for mode, teacher in teachers.items():
        synthesizer, (student, optimizer) = synthesizers[mode], students[mode]
        actions[f"gen-{mode}"] = (lambda s=synthesizer, t=teacher, m=student:
                                  s.generator_step(t, m))
        actions[f"stud-{mode}"] = (lambda m=student, o=optimizer, s=synthesizer, t=teacher:
                                   student_step(m, o, s, t))
        actions[f"T-{mode}"] = lambda t=teacher: teacher_forward_backward(t, images)
    return paired_medians(actions, repeats)


def print_loop_vs_batched(repeats: int) -> None:
    print(f"\n## 2. Batched ensemble (torch.func vmap) vs plain loop (ms, median; batch {BATCH})")
    print("ratio = loop / batched: > 1 means the batched ensemble is faster")
    print(f"{'model':<7} {'width':>5} {'K':>3} | {'gen loop':>8} {'gen vmap':>8} {'ratio':>5} | "
          f"{'stud loop':>9} {'stud vmap':>9} {'ratio':>5} | {'T loop':>7} {'T vmap':>7} "
          f"{'ratio':>5}")
    for name, shape in MODELS:
        for width in WIDTHS:
            for members in MEMBER_COUNTS:
                t = loop_vs_batched(name, shape, width, members, repeats)
                cells = []
                for kind, size in (("gen", 8), ("stud", 9), ("T", 7)):
                    loop, batched = t[f"{kind}-loop"], t[f"{kind}-batched"]
                    cells.append(f"{1e3 * loop:>{size}.1f} {1e3 * batched:>{size}.1f} "
                                 f"{loop / batched:>5.2f}")
                print(f"{name:<7} {width:>5} {members:>3} | " + " | ".join(cells))


# ---- main ----------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Profile the server-side RDSKD distillation step (see module docstring).")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed runs per cell after one warm-up (default: 7)")
    parser.add_argument("--quick", action="store_true", help="3 repeats per cell")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads, as server.num_threads (default: 2)")
    parser.add_argument("--tables", default="1,2", help="which tables to print (default: 1,2)")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    tables = {int(value) for value in args.tables.split(",")}
    if not tables <= {1, 2}:
        parser.error(f"--tables: allowed values are 1, 2 (got {args.tables!r})")
    repeats = 3 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"# profile_distillation: torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {cpu_name()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, {repeats} repeats, load average at start "
          f"{os.getloadavg()[0]:.1f}")
    if 1 in tables:
        print_breakdown(repeats)
    if 2 in tables:
        print_loop_vs_batched(repeats)
    print(f"\n# wall time {time.perf_counter() - started:.0f} s, load average at end "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
