"""Push a finished run folder to a hub: `hub.push=true` at the end of a run, or `hf-transfer push`.

The folder goes up as it is, less what is local to this machine (the Trainer's checkpoints,
Hydra's records, the log). The token comes from HF_TOKEN or `hf auth login` and is handed to
the hub client only: it is never written into the run folder, the config, the logs or the
TrainingArguments that checkpoints pickle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer import run_folder
from hf_transfer.errors import CommandParser, UserError, first_line
from hf_transfer.outputs import ships_model_code

# Imported inside the functions that use them, not here: huggingface_hub. This module is on the path
# of --help and of a config error, which stay quick (tests/test_architecture.py).

log = logging.getLogger(__name__)


@dataclass
class HubConfig:
    """`hub.*`: where a finished run is pushed; `hf-transfer push` takes the same settings as
    options (--repo-id, --private, ...)."""

    push: bool = False  # push at the end of the run (hf-transfer push does it later)
    repo_id: str | None = None  # ORG/NAME
    private: bool = False  # create the repo private
    revision: str | None = None  # a branch to push to (created if needed)
    commit_message: str | None = None
    # A self-hosted hub; HF_ENDPOINT is used when this is not set, else huggingface.co.
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("hub.push=true needs hub.repo_id=ORG/NAME")


# `hf-transfer push` options: every HubConfig field but `push`, as --kebab-case.
PUSH_OPTIONS = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(HubConfig) if f.name != "push"}

# Local to this machine, or large and re-creatable: not part of the published model.
NOT_PUSHED = ["checkpoints/**", ".hydra/**", "train.log", "predictions_*.jsonl", "*.lock", ".*"]


def push(folder: Path, request: HubConfig) -> str:
    """Upload the run folder as `request` (the hub.* settings) says; returns the URL of the
    commit. Raises UserError on any failure."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    _check_finished(folder)
    token = get_token()
    if not token:
        raise UserError(
            f"no hub token to push {folder} to {request.repo_id}: set HF_TOKEN or run `hf auth login`, "
            f"then retry with: {_retry(folder, request)}"
        )
    ignore = list(NOT_PUSHED)
    unshareable = _unshareable_adapter(folder)
    if unshareable:
        log.warning("adapter/ is not pushed: %s; the merged model at the root of the run folder is pushed instead",
                    unshareable)  # fmt: skip
        ignore.append("adapter/**")
    api = HfApi(endpoint=request.endpoint, token=token)
    try:
        api.create_repo(request.repo_id, private=request.private, exist_ok=True)
        if request.revision:
            api.create_branch(request.repo_id, branch=request.revision, exist_ok=True)
        log.info(
            "pushing %s to %s%s", folder, request.repo_id, f" (branch {request.revision})" if request.revision else ""
        )
        message = request.commit_message or f"Upload {folder.name} with hf_transfer"
        commit = api.upload_folder(
            repo_id=request.repo_id,
            folder_path=folder,
            revision=request.revision,
            commit_message=message,
            ignore_patterns=ignore,
        )
        if (folder / "adapter").is_dir() and not unshareable:
            # peft's Auto classes load an adapter from the root of a revision only (a subfolder
            # would be passed on to the base model's loading too): the adapter also gets a branch.
            branch = adapter_branch(request.revision)
            api.create_branch(request.repo_id, branch=branch, exist_ok=True)
            api.upload_folder(
                repo_id=request.repo_id, folder_path=folder / "adapter", revision=branch, commit_message=message
            )
            log.info("the LoRA adapter alone is on branch '%s' of %s", branch, request.repo_id)
    except Exception as err:  # HTTP errors, refused repos, no network: all end the same way
        raise UserError(
            f"push of {folder} to {request.repo_id} failed: {_reason(err)}. The run folder is unchanged; "
            f"retry with: {_retry(folder, request)}"
        ) from None
    log.info("pushed to %s", commit.commit_url)
    return commit.commit_url


def adapter_branch(revision: str | None) -> str:
    """The branch that holds a LoRA run's adapter at its root."""
    return f"{revision}-adapter" if revision else "adapter"


def _check_finished(folder: Path) -> None:
    if folder.is_dir() and run_folder.state(folder) == "incomplete":
        raise UserError(f"'{folder}' is not a finished run folder: {run_folder.resume_hint(folder)}")
    missing = [name for name in ("config.json", "metrics.json", "README.md") if not (folder / name).exists()]
    if not folder.is_dir() or missing:
        raise UserError(f"'{folder}' is not a finished run folder (missing: {', '.join(missing) or 'the folder'})")


def _unshareable_adapter(folder: Path) -> str | None:
    """Why no one else could load the run's LoRA adapter with peft's Auto classes, else None."""

    adapter_config = folder / "adapter" / "adapter_config.json"
    if not adapter_config.exists():
        return None
    if ships_model_code(folder):
        # AutoPeftModel* would rebuild the base as the architecture's own classifier.
        return ("the model's class is code beside its weights (the mean-pooling head), "
                "which peft's Auto classes do not rebuild under an adapter")  # fmt: skip
    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or ""
    if not base:
        return "it names no base model"
    if base.startswith(("/", ".", "~")) or Path(base).exists() or "://" in base:
        return f"its base model ({base}) is a local path or package file that cannot be loaded elsewhere"
    return None


def _reason(err: Exception) -> str:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    first = first_line(err)
    if status in (401, 403):
        return f"the hub refused the token or the repo ({status}: {first})"
    if status is not None:
        return f"{status}: {first}"
    return f"{type(err).__name__}: {first}"


def _retry(folder: Path, request: HubConfig) -> str:
    """The `hf-transfer push` command that repeats this push."""
    parts = ["hf-transfer push", shlex.quote(str(folder))]
    for name, option in PUSH_OPTIONS.items():
        value = getattr(request, name)
        if value is True:
            parts.append(option)
        elif value:
            parts += [option, shlex.quote(str(value))]
    return " ".join(parts)


# -- hf-transfer push ---------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parse = CommandParser(prog="hf-transfer push", description="Push a finished run folder to a hub.")
    parse.add_argument("folder", help="the run folder")
    for name, option in PUSH_OPTIONS.items():
        if name == "private":
            parse.add_argument(option, action="store_true", help="create the repo private")
        else:
            parse.add_argument(option, required=name == "repo_id", help=_PUSH_HELP.get(name))
    args: Any = parse.parse_args(argv)
    _configure_logging()
    url = push(Path(args.folder), HubConfig(push=True, **{name: getattr(args, name) for name in PUSH_OPTIONS}))
    print(url)
    return 0


_PUSH_HELP = {
    "repo_id": "ORG/NAME on the hub",
    "revision": "a branch to push to (created if needed)",
    "endpoint": "a self-hosted hub; default: HF_ENDPOINT, else huggingface.co",
}


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
