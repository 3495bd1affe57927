"""`peftbench profile`: each method's memory and throughput on synthetic batches, in fresh processes."""

from typing import Annotated

import typer
from rich.console import Console

from peftbench.cli.common import DType, Device, JsonFlag, WideFlag, app, print_json, show_view, stdout_console


@app.command()
def profile(
    model: Annotated[str, typer.Argument(help="model name, e.g. config:t5-large")],
    method: Annotated[list[str] | None, typer.Option("--method", help="method spec, repeatable")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per microbatch")] = 8,
    seq_len: Annotated[int, typer.Option("--seq-len", help="input tokens per sequence")] = 128,
    target_len: Annotated[int, typer.Option("--target-len", help="target tokens (text-to-text models)")] = 8,
    steps: Annotated[int, typer.Option("--steps", help="timed training steps and inference passes")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed warm-up steps and passes first")] = 3,
    dtype: Annotated[DType | None, typer.Option(
        "--dtype", help="bf16: bf16 autocast over fp32 weights; default bf16 on CUDA and on CPUs that compute"
                        " bf16 natively (as `run` does), else fp32")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="random weights, nothing read or downloaded"
                                                                    " but the config and tokenizer")] = False,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="do not profile full tuning first")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing",
                                                         help="train with checkpointed layers")] = False,
    device: Annotated[Device, typer.Option("--device", help="where to measure")] = Device.auto,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Peak memory, train and inference tokens/s of each method on synthetic batches of one shape, each
    in a fresh process, as % of full tuning measured in the same call."""
    import time

    from peftbench.profile import ProfileSettings, default_dtype
    from peftbench.profile import profile as run_profile
    from peftbench.terminal import clock
    from peftbench.execution import pick_device
    from peftbench.views import profile_view

    chosen = pick_device(device.value).type
    settings = ProfileSettings(model=model, batch_size=batch_size, seq_len=seq_len, target_len=target_len,
                               steps=steps, warmup=warmup, random_init=random_init, device=chosen,
                               gradient_checkpointing=gradient_checkpointing,
                               dtype=dtype.value if dtype else default_dtype(chosen))
    console = Console(stderr=True)
    started = [time.monotonic()]
    talk = not as_json or console.is_terminal

    def starting(spec: str, index: int, total: int) -> None:
        started[0] = time.monotonic()
        if talk:
            console.print(f"profiling {index}/{total} {spec} in a fresh process ({warmup} warm-up + {steps} timed"
                          " steps, then inference) ...", markup=False, highlight=False)

    def finished(entry: dict) -> None:
        if talk:
            console.print(f"  {entry['method']}: {entry['status']} in {clock(time.monotonic() - started[0])}",
                          markup=False, highlight=False)

    result = run_profile(settings, list(method or []), reference=not no_reference, on_result=finished,
                         on_start=starting)
    if as_json:
        print_json(result)
        return
    out = stdout_console()
    targets = "" if result["family"] == "encoder" else f" + {target_len} target"
    out.print(f"{model} · batch {batch_size} × {seq_len} input{targets} tokens · {steps} timed steps"
              f" after {warmup} warm-up · {result['dtype']}{' · random init' if random_init else ''}",
              markup=False, highlight=False)
    out.print(f"device: {result['device']} · " + " ".join(f"{k} {v}" for k, v in (result["versions"] or {}).items()),
              markup=False, highlight=False)
    show_view(f"profile of {model}", profile_view(result), wide)
