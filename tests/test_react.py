"""The ReAct agent: reading loosely written replies (pure), and whole rollouts against the fake server and a real
sandbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agenttrain import api
from agenttrain.agents.react import ReactAgent, stated_prediction
from agenttrain.agents.react_parse import Action, parse_arguments, parse_reply, read_literal
from agenttrain.config import AgentConfig, BudgetConfig, LLMConfig, SandboxConfig
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.usage import UsageMeter
from agenttrain.functions import FunctionSet, build_function
from agenttrain.rundir.records import FunctionCallRecord, Rollout
from agenttrain.sandbox import Sandbox
from agenttrain.scorers import judge
from agenttrain.tasks.base import AnswerFormat, Example
from tests.support.fake_openai import FakeOpenAI, Fault, Reply
from tests.support.files import write_problems
from tests.support.scripted import (
    MULTIPLY,
    TERMINATE,
    add,
    agent_reply,
    is_optimizer,
    list_b,
    multiplying_agent,
    numbers,
    react_action,
    react_answer,
    tool_outputs,
    tool_results,
)

TWO_INTEGERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
CODE = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
WITH_MULTIPLY = FunctionSet((build_function("multiply", "Multiplies two integers.", TWO_INTEGERS, "", MULTIPLY),))
QUESTION = Example(id="q", question="What is 6 times 7?", answer="42")


# --- reading replies (pure) ---------------------------------------------------------------------------------


def test_an_action_is_read_and_an_observation_the_model_wrote_itself_is_cut():
    step = parse_reply(
        'Thought: multiply.\nAction: multiply\nAction Input: {"a": 6, "b": 7}\n'
        "Observation: 41\nThought: done\nFINAL ANSWER: 41"
    )
    assert step.action == Action("multiply", '{"a": 6, "b": 7}')
    assert step.final_answer is None
    assert "41" not in step.text and step.text.endswith('{"a": 6, "b": 7}')


def test_the_numbered_form_is_read_with_its_number():
    step = parse_reply("Thought 2: again\nAction 2: python\nAction 2 Input: print(1)\nObservation 2: 1")
    assert step.action == Action("python", "print(1)", number=2)


def test_bold_keywords_a_quoted_tool_name_and_a_fenced_input_are_read():
    step = parse_reply("**Thought:** code it\n**Action:** `python`\n**Action Input:**\n```python\nx = 1\n```\n")
    assert step.action is not None and step.action.tool == "python"
    assert parse_arguments(step.action.input, CODE) == {"code": "x = 1"}


def test_a_fence_cut_off_by_the_token_limit_still_yields_its_code():
    assert parse_arguments("```python\nx = 1\nprint(x)", CODE) == {"code": "x = 1\nprint(x)"}


@pytest.mark.parametrize("marker", ["FINAL ANSWER:", "Final Answer:", "**Final Answer:**"])
def test_a_final_answer_is_read_whatever_its_capitalisation(marker):
    assert parse_reply(f"Thought: I know it.\n{marker} 42").final_answer == "42"


def test_the_last_final_answer_counts_as_scorers_read_it():
    assert parse_reply("FINAL ANSWER: 41\nNo, wait.\nFINAL ANSWER: 42").final_answer == "42"


def test_whichever_of_action_and_answer_comes_first_wins():
    acting = parse_reply('Action: multiply\nAction Input: {"a": 1, "b": 2}\nFINAL ANSWER: 2')
    answering = parse_reply("FINAL ANSWER: 2\nAction: multiply")
    assert acting.action is not None and acting.final_answer is None
    assert answering.final_answer == "2\nAction: multiply" and answering.action is None


def test_an_action_input_without_an_action_is_a_problem_and_plain_text_is_neither():
    assert "no `Action:` line" in (parse_reply('Action Input: {"a": 1}').problem or "")
    plain = parse_reply("Let me think about this.")
    assert (plain.action, plain.final_answer, plain.problem) == (None, None, None)


@pytest.mark.parametrize(
    "written",
    [
        '{"a": 6, "b": 7}',
        "{'a': 6, 'b': 7}",
        '{"a": 6, "b": 7,}',
        '```json\n{"a": 6, "b": 7}\n```',
        "{'a': 6, 'b': 7,}",
    ],
)
def test_json_and_python_style_arguments_are_read(written):
    assert parse_arguments(written, TWO_INTEGERS) == {"a": 6, "b": 7}


def test_json_words_become_python_values_but_strings_stay_as_written():
    assert read_literal("{'a': true, 'b': null, 'c': 'true story',}") == {"a": True, "b": None, "c": "true story"}


def test_reading_arguments_never_evaluates_code(tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_arguments(f"{{'a': open({str(target)!r}, 'w'), 'b': 1}}", TWO_INTEGERS)
    assert not target.exists()


def test_a_one_argument_tool_takes_a_bare_value():
    count = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert parse_arguments("17", count) == {"n": 17}
    assert parse_arguments("x = 1\nprint(x)", CODE) == {"code": "x = 1\nprint(x)"}
    assert parse_arguments("6 * 7", CODE) == {"code": "6 * 7"}
    assert parse_arguments("42", CODE) == {"code": "42"}  # a string parameter keeps the text, not the number
    assert parse_arguments('"print(1)"', CODE) == {"code": "print(1)"}


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("a=6, b=7", "not a JSON object"),
        ('{"a": 6}', "missing b"),
        ('{"a": 6, "b": 7, "c": 1}', "unknown c"),
        ("[6, 7]", "must be a JSON object"),
    ],
)
def test_unusable_arguments_are_explained_with_the_expected_shape(written, problem):
    with pytest.raises(ValueError, match=problem) as error:
        parse_arguments(written, TWO_INTEGERS)
    assert '{"a": ..., "b": ...}' in str(error.value)


@pytest.mark.parametrize(
    ("scorer", "answer_format", "answer", "gold"),
    [
        ("math", "boxed", "\\frac{1}{2}", "\\frac12"),
        ("math", "boxed", "\\boxed{42}", "42"),
        ("numeric", "boxed", "\\boxed{42}", "42"),
        ("gaia", "final_answer", "Paris", "paris"),
    ],
)
def test_the_prediction_is_what_the_task_scorer_reads(scorer, answer_format, answer, gold):
    assert judge(scorer, stated_prediction(answer, answer_format), gold).correct


# --- rollouts against the fake server -----------------------------------------------------------------------


def solve(
    responder: Any,
    functions: FunctionSet = WITH_MULTIPLY,
    answer_format: AnswerFormat = "boxed",
    **agent_settings: Any,
) -> tuple[Rollout, list[dict[str, Any]]]:
    """One ReAct rollout of QUESTION against a fake server and a real sandbox; returns it and the requests."""

    async def run(base_url: str) -> Rollout:
        client = LLMClient(
            LLMConfig(base_url=base_url, max_retries=0), role="agent", meter=UsageMeter(BudgetConfig(), {}), cache=None
        )
        sandbox = Sandbox(SandboxConfig(timeout_s=10, warm_workers=1))
        config = AgentConfig(type="react", model="agent-model", **{"max_turns": 6, **agent_settings})
        try:
            await sandbox.start()
            return await ReactAgent(client, config, sandbox, answer_format).solve(QUESTION, functions)
        finally:
            await sandbox.close()
            await client.close()

    with FakeOpenAI(responder) as server:
        rollout = asyncio.run(run(server.base_url))
    return rollout, server.requests


def answer_from_last_observation(body: dict[str, Any]) -> Reply:
    return react_answer(f"\\boxed{{{numbers(tool_results(body)[-1])[-1]}}}")


@pytest.mark.slow
def test_a_learned_function_is_called_and_its_result_comes_back_as_the_observation():
    def model(body):
        return answer_from_last_observation(body) if tool_results(body) else react_action("multiply", {"a": 6, "b": 7})

    rollout, _ = solve(model)
    assert rollout.stop_reason == "answered" and rollout.turns == 2
    assert rollout.messages[3] == {"role": "user", "content": "Observation: 42"}
    assert rollout.function_calls == [FunctionCallRecord(name="multiply", ok=True, arguments={"a": 6, "b": 7},
                                                         result="42")]
    assert rollout.prediction == "\\boxed{42}"
    assert judge("math", rollout.prediction, QUESTION.answer).correct


@pytest.mark.slow
def test_tools_are_listed_as_text_and_the_stop_sequence_is_sent():
    _, requests = solve(lambda body: react_answer("\\boxed{42}"))
    body = requests[0]
    assert "tools" not in body
    assert "Observation:" in body["stop"]
    system = body["messages"][0]["content"]
    assert "python: Runs Python code" in system
    assert 'multiply: Multiplies two integers.\n  arguments (JSON schema): {"type": "object"' in system


@pytest.mark.slow
def test_python_state_persists_between_actions():
    def model(body):
        done = tool_results(body)
        if not done:
            return react_action("python", {"code": "x = 6 * 7"})
        if len(done) == 1:
            return react_action("python", "print(x)")
        return answer_from_last_observation(body)

    rollout, _ = solve(model)
    assert tool_outputs(rollout.messages)[-1] == "42"
    assert (rollout.code_runs, rollout.code_errors) == (2, 0)
    assert rollout.function_calls == []  # python runs are counted as code, not as learned-function calls


@pytest.mark.slow
def test_unreadable_arguments_are_named_in_the_observation_and_the_model_can_retry():
    def model(body):
        done = tool_results(body)
        if not done:
            return react_action("multiply", "a=6, b=7")
        if done[-1].startswith("Error"):
            return react_action("multiply", {"a": 6, "b": 7})
        return answer_from_last_observation(body)

    rollout, _ = solve(model)
    first = tool_outputs(rollout.messages)[0]
    assert "not a JSON object" in first and '{"a": ..., "b": ...}' in first
    assert [call.ok for call in rollout.function_calls] == [False, True]
    assert rollout.stop_reason == "answered" and rollout.prediction == "\\boxed{42}"


@pytest.mark.slow
def test_a_reply_that_cannot_be_read_gets_an_observation_and_the_run_goes_on():
    def model(body):
        if len(body["messages"]) == 2:
            return Reply(content='Thought: I multiply.\nAction Input: {"a": 6, "b": 7}')
        return react_answer("\\boxed{42}")

    rollout, _ = solve(model)
    reminder = rollout.messages[3]["content"]
    assert reminder.startswith("Observation: Error:") and "no `Action:` line" in reminder
    assert rollout.stop_reason == "answered" and rollout.turns == 2


@pytest.mark.slow
def test_a_tool_that_does_not_exist_is_reported_with_the_tools_that_do():
    def model(body):
        return answer_from_last_observation(body) if tool_results(body) else react_action("divide", {"a": 6, "b": 7})

    rollout, _ = solve(model)
    observation = tool_outputs(rollout.messages)[0]
    assert "no tool named 'divide'" in observation and "python, multiply" in observation
    error = observation.removeprefix("Error: ")
    assert rollout.function_calls == [FunctionCallRecord(name="divide", ok=False, error=error, result=observation)]


@pytest.mark.slow
def test_the_numbered_form_gets_numbered_observations():
    def model(body):
        if tool_results(body):
            return Reply(content="Thought 2: I have it.\nFinal Answer: 42")
        return react_action("multiply", {"a": 6, "b": 7}, number=1)

    rollout, _ = solve(model, answer_format="final_answer")
    assert rollout.messages[3]["content"] == "Observation 1: 42"
    assert rollout.prediction == "FINAL ANSWER: 42"
    assert judge("gaia", rollout.prediction, QUESTION.answer).correct


@pytest.mark.slow
def test_an_observation_invented_by_a_server_that_ignores_stop_is_replaced_by_the_real_one():
    def model(body):
        if tool_results(body):
            return answer_from_last_observation(body)
        return Reply(content='Action: multiply\nAction Input: {"a": 6, "b": 7}\nObservation: 41\nFINAL ANSWER: 41')

    rollout, _ = solve(model)
    assert not any("41" in str(m["content"]) for m in rollout.messages)
    assert rollout.messages[3]["content"] == "Observation: 42" and rollout.prediction == "\\boxed{42}"


@pytest.mark.slow
def test_a_reply_with_neither_action_nor_answer_is_nudged_until_max_turns():
    rollout, _ = solve(lambda body: Reply(content="Let me think about it."), max_turns=3)
    assert (rollout.stop_reason, rollout.turns) == ("max_turns", 3)
    nudges = [m["content"] for m in rollout.messages[3::2]]
    assert len(nudges) == 3 and all("FINAL ANSWER: \\boxed{" in n for n in nudges)
    assert rollout.prediction == "Let me think about it."  # no answer stated: the scorer gets the last text


@pytest.mark.slow
def test_after_max_failed_calls_functions_are_refused_and_the_model_is_told_to_answer():
    def model(body):
        done = tool_results(body)
        if done and "no longer available" in done[-1]:
            return react_answer("\\boxed{42}")
        return react_action("multiply", {"a": 6})

    rollout, _ = solve(model, max_failed_calls=2)
    outputs = tool_outputs(rollout.messages)
    assert "give your final answer now" in outputs[1] and "give your final answer now" not in outputs[0]
    assert outputs[2].startswith("Functions are no longer available")
    assert [call.ok for call in rollout.function_calls] == [False, False]  # the refused third call never ran
    assert rollout.stop_reason == "answered"


@pytest.mark.slow
def test_an_endpoint_failure_ends_the_rollout_as_llm_error():
    rollout, _ = solve(lambda body: Fault(status=500))
    assert rollout.stop_reason == "llm_error" and "500" in (rollout.error or "")
    assert rollout.prediction is None


@pytest.mark.slow
def test_training_a_react_agent_accepts_a_helpful_function_and_the_optimizer_reads_its_transcripts(
    write_config, tmp_path: Path
):
    def optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)

    def respond(body):
        return optimizer(body) if is_optimizer(body) else agent_reply(body, multiplying_agent(body))

    problems = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]
    data = write_problems(tmp_path / "problems.jsonl", problems)
    with FakeOpenAI(respond) as server:
        run = api.train(write_config(server.base_url, data, agent={"type": "react"})).run
        optimizer_prompts = [b["messages"][1]["content"] for b in server.requests if is_optimizer(b)]
    assert [run.snapshot(e).metrics.status for e in run.epochs()] == ["baseline", "accepted", "unchanged"]
    assert run.snapshot(1).metrics.train_accuracy == 1.0
    # the epoch-1 conversations, shown to the optimizer at epoch 2, read as plain ReAct text
    assert "Action: multiply" in optimizer_prompts[-1] and "user: Observation: " in optimizer_prompts[-1]
