"""`peftbench rm RUN_ID...`: delete stored runs, their superseded history and their weights' folders."""

from typing import Annotated

import typer

from peftbench.cli.common import DEFAULT_STORE, JsonFlag, StoreOption, app, print_json, stdout_console


@app.command()
def rm(
    run_ids: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes), as `results --seeds` lists them")],
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """Delete runs from the store (their rows and earlier results) and their saved weights; every id is checked
    first, so a wrong one changes nothing. Running the suite again trains them anew."""
    from peftbench.run_history import remove

    done = remove(run_ids, store)
    if as_json:
        print_json(done)
        return
    history = f" and {done['history_rows']} superseded result(s)" if done["history_rows"] else ""
    stdout_console().print(
        f"removed {len(done['removed'])} run(s){history} from {store}: {', '.join(done['removed'])};"
        f" freed {done['weights_bytes_freed']:,} bytes of weights; {done['runs_left']} run(s) left",
        markup=False, highlight=False, soft_wrap=True)
