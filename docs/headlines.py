"""The rows of the README's results table: for each, what it is, where its benchmark's
JSON keeps the figure, and the baseline it is compared with in the same run.

A row is added here when a benchmark's figure belongs in the README's short results
summary; ``docs/readme_results.py`` renders them (``make readme-results``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    """One row of the README's results table.

    Example:
        >>> row = Headline(
        ...     result="runtime",
        ...     what="Graph runtime, ms per step",
        ...     value="zero_cost_model/relaygraph_ms_per_step",
        ...     peer="zero_cost_model/plain_langgraph_ms_per_step",
        ...     peer_name="plain LangGraph",
        ...     fmt="{:.2f}",
        ...     unit="ms",
        ... )
    """

    result: str
    """The JSON's name under ``benchmarks/results/``, without ``.json``."""
    what: str
    """What the figure is (Markdown written here; ``{path}`` quotes the JSON)."""
    value: str
    """Path of the figure in the JSON."""
    fmt: str = "{:,.1f}"
    """Python format of the figure, its peer and its interval (after ``scale``)."""
    unit: str = ""
    """Written after each formatted number."""
    scale: float = 1.0
    """Multiplies the numbers before formatting (100 shows a fraction as points)."""
    peer: str | None = None
    """Path of the same measure of the baseline it is compared with, in the same run."""
    peer_name: str = ""
    """What the peer is (Markdown written here)."""
    interval: str | None = None
    """Path of the figure's 95% interval, ``[low, high]``."""
    args: str = ""
    """Options after the script's command that made this part of the JSON."""


HEADLINES: tuple[Headline, ...] = (
    Headline(
        result="engine",
        what="Decode speed, SmolLM2-135M on the CPU: the embedded engine",
        value="models/model=smollm2-135m/decode_tok_s",
        unit="tok/s",
        peer="models/model=smollm2-135m/raw_llama_decode_tok_s",
        peer_name="llama-cpp-python's `create_completion`, same GGUF",
    ),
    Headline(
        result="engine",
        what="Decode speed, SmolLM2-135M on the CPU: the embedded engine",
        value="models/model=smollm2-135m/decode_tok_s",
        unit="tok/s",
        peer="transformers_comparison/decode_tok_s",
        peer_name="transformers + torch (float32)",
        args="--compare-transformers",
    ),
    Headline(
        result="runtime",
        what="Graph runtime per step, free model: relaygraph",
        value="zero_cost_model/relaygraph_ms_per_step",
        fmt="{:.2f}",
        unit="ms",
        peer="zero_cost_model/plain_langgraph_ms_per_step",
        peer_name="plain LangGraph",
    ),
    Headline(
        result="runtime",
        what="Graph runtime per step, SmolLM2 research team: relaygraph",
        value="smollm2_research_team/relaygraph_ms_per_step",
        fmt="{:,.0f}",
        unit="ms",
        peer="smollm2_research_team/plain_langgraph_ms_per_step",
        peer_name="plain LangGraph",
    ),
    Headline(
        result="serving",
        what="HTTP overhead per request over an in-process call (free model, p50)",
        value="zero_cost_overhead/overhead_p50_ms",
        fmt="{:.2f}",
        unit="ms",
        args="--only own",
    ),
    Headline(
        result="serving",
        what="Streaming throughput through the server, SmolLM2, 48 tokens a stream: "
        "16 concurrent clients",
        value="concurrent_streams/2/server/tokens_per_s",
        unit="tok/s",
        peer="concurrent_streams/0/server/tokens_per_s",
        peer_name="one client",
        args="--only own",
    ),
    Headline(
        result="serving",
        what="Streaming throughput at 16 concurrent clients, prompts of 50-1,500 tokens "
        "(prefill-bound on 2 cores): relaygraph's server",
        value="peers/servers/relaygraph/levels/concurrency=16/tokens_per_s",
        unit="tok/s",
        peer="peers/servers/llama-server/levels/concurrency=16/tokens_per_s",
        peer_name="llama.cpp's own llama-server",
        args="--only peers --peer-requests 32",
    ),
    Headline(
        result="serving",
        what="Time to first token, p50, at 4 concurrent clients: relaygraph's server",
        value="peers/servers/relaygraph/levels/concurrency=4/ttft_p50_ms",
        fmt="{:,.0f}",
        unit="ms",
        peer="peers/servers/llama-server/levels/concurrency=4/ttft_p50_ms",
        peer_name="llama-server",
        args="--only peers --peer-requests 32",
    ),
    Headline(
        result="serving",
        what="Agent workload: recorded HotPotQA and ALFWorld agent calls replayed by 1 agent "
        "(wall time): relaygraph's server",
        value="agents/servers/relaygraph/levels/concurrency=1/wall_s",
        unit="s",
        peer="agents/servers/llama-server/levels/concurrency=1/wall_s",
        peer_name="llama-server",
        args="--only agents --peers relaygraph llama-server",
    ),
    Headline(
        result="serving",
        what="The same replay by 4 agents sharing the server (wall time): relaygraph's server",
        value="agents/servers/relaygraph/levels/concurrency=4/wall_s",
        unit="s",
        peer="agents/servers/llama-server/levels/concurrency=4/wall_s",
        peer_name="llama-server",
        args="--only agents --peers relaygraph llama-server",
    ),
    Headline(
        result="agents_over_http",
        what="HotPotQA ReAct, 20 questions, SmolLM2 through a `relaygraph worker`",
        value="workloads/hotpotqa/http/seconds",
        fmt="{:,.1f}",
        unit="s",
        peer="workloads/hotpotqa/in_process/seconds",
        peer_name="in process",
        args="--parts hotpotqa",
    ),
    Headline(
        result="agents_over_http",
        what="The same, on the items both sides did alike (same steps, same answer): "
        "time through the worker over time in process",
        value="workloads/hotpotqa/agreement/http_vs_in_process_alike",
        fmt="{:.2f}x",
        args="--parts hotpotqa",
    ),
    Headline(
        result="extractive_answers",
        what="HotPotQA reading comprehension (gold paragraphs, 376 questions tuning never "
        "saw), SmolLM2-135M: answer F1 of an agent that extracts its answer",
        value="report/extract/f1",
        fmt="{:.3f}",
        peer="report/plain/f1",
        peer_name="the same agent writing it",
    ),
    Headline(
        result="extractive_answers",
        what="The same: F1 gained by extracting, paired over questions",
        value="report/f1_gain",
        fmt="{:+.3f}",
        interval="report/f1_gain_interval",
    ),
    Headline(
        result="structured",
        what="Decode speed with a JSON-schema token mask on every step (a long text field), "
        "SmolLM2-135M, batch 1",
        value="mask/models/model=smollm2-135m/batches/batch=1/tok_s/json_long",
        unit="tok/s",
        peer="mask/models/model=smollm2-135m/batches/batch=1/tok_s/unconstrained",
        peer_name="free text",
        args="--sections mask",
    ),
    Headline(
        result="structured",
        what="HotPotQA agent, prompt tokens per question: grammar-decoded steps",
        value="agents/hotpotqa/grammar/prompt_tokens_per_item",
        fmt="{:,.0f}",
        peer="agents/hotpotqa/guided/prompt_tokens_per_item",
        peer_name="guided decoding",
        args="--sections agents",
    ),
    Headline(
        result="memory_index",
        what="Memory search at 100,000 entries "
        "({results/kind=hnsw,size=100000/real_entries:,} real, the rest noisy copies), p50: HNSW "
        "(recall@10 {results/kind=hnsw,size=100000/recall_at_10:.1%})",
        value="results/kind=hnsw,size=100000/search/p50_ms",
        fmt="{:.2f}",
        unit="ms",
        peer="results/kind=exact,size=100000/search/p50_ms",
        peer_name="exact search",
    ),
    Headline(
        result="memory_backends",
        what="Shared memory in PostgreSQL (pgvector HNSW), search p50 at 100,000 entries, "
        "recall@10 {results/backend=pgvector-hnsw,size=100000/recall_at_10:.1%} "
        "(FAISS HNSW: {results/backend=faiss-hnsw,size=100000/recall_at_10:.1%})",
        value="results/backend=pgvector-hnsw,size=100000/search/p50_ms",
        fmt="{:.2f}",
        unit="ms",
        peer="results/backend=faiss-hnsw,size=100000/search/p50_ms",
        peer_name="the in-process FAISS HNSW memory",
    ),
    Headline(
        result="eval_fanout",
        what="HotPotQA evaluation (100 questions, reader graph) on Ray, 2 workers of one CPU "
        "each on this 2-core machine: items per minute",
        value="parts/hotpotqa/measured/workers=2/items_per_min",
        peer="parts/hotpotqa/measured/workers=1/items_per_min",
        peer_name="1 worker",
        args="--graph relaygraph.eval.hotpotqa.agents:reader --hotpot-limit 100",
    ),
    Headline(
        result="eval_fanout",
        what="ALFWorld evaluation (the 12-game draw, ReAct agent) on Ray, 2 workers of one "
        "CPU each: games per minute",
        value="parts/alfworld/measured/workers=2/items_per_min",
        fmt="{:.2f}",
        peer="parts/alfworld/measured/workers=1/items_per_min",
        peer_name="1 worker",
        args="--hotpot-limit 0 --alfworld-limit 12",
    ),
    Headline(
        result="context_routing",
        what="Supporting-fact recall at a 384-token budget: RCR",
        value="routing/rows/rcr@384/sf_recall",
        fmt="{:.1%}",
        peer="routing/rows/topk@384/sf_recall",
        peer_name="top-k similarity",
    ),
    Headline(
        result="context_routing",
        what="Research team on HotPotQA, prompt tokens per question: RCR at 384 tokens",
        value="team/rcr/prompt_tokens_per_question",
        fmt="{:,.0f}",
        peer="team/full/prompt_tokens_per_question",
        peer_name="the full context",
    ),
    Headline(
        result="model_routing",
        what="Calibrated cascade ({analysis/best_estimator}) at 50% escalation: accuracy "
        "gained over random routing",
        value="analysis/estimators/{analysis/best_estimator}/gain_over_random/50%/accuracy_points",
        fmt="{:+.1f}",
        unit="points",
        scale=100,
        interval="analysis/estimators/{analysis/best_estimator}/gain_over_random/50%/ci95",
    ),
    Headline(
        result="speculative",
        what="Speculative decoding (prompt lookup, adaptive window) over HTTP, RTT 0 ms: "
        "speedup over cloud-only decoding",
        value="real/0/speculative/adaptive/speedup",
        fmt="{:.2f}x",
    ),
    Headline(
        result="speculative",
        what="Speculative decoding in process (prompt lookup, adaptive window, 16-bit "
        "target): speedup over plain decoding",
        value="in_process/smollm2-135m-f16.gguf/prompt-lookup/speculative/adaptive/speedup",
        fmt="{:.2f}x",
    ),
    Headline(
        result="speculative_loaded",
        what="Speculative decoding, 4 edges sharing one worker, held-out prompts to repeat: "
        "tuned adaptive window's speedup over the target alone (request seconds)",
        value="workloads/repeat/held_out/comparisons/tuned_adaptive_vs_target_alone/seconds_ratio",
        fmt="{:.2f}x",
        interval="workloads/repeat/held_out/comparisons/tuned_adaptive_vs_target_alone/"
        "seconds_ratio_ci95",
    ),
    Headline(
        result="speculative_loaded",
        what="The same on held-out agent steps (HotPotQA and ALFWorld)",
        value="workloads/agent/held_out/comparisons/tuned_adaptive_vs_target_alone/seconds_ratio",
        fmt="{:.2f}x",
        interval="workloads/agent/held_out/comparisons/tuned_adaptive_vs_target_alone/"
        "seconds_ratio_ci95",
    ),
    Headline(
        result="eval_headline",
        what="HotPotQA, {runs/hotpotqa-embedded/summary/items} hard distractor questions, "
        "embedded SmolLM2-135M: exact match",
        value="runs/hotpotqa-embedded/summary/metrics/em",
        fmt="{:.1%}",
        args="--parts embedded",
    ),
    Headline(
        result="eval_headline",
        what="ALFWorld, {runs/alfworld-embedded/summary/items} unseen games, "
        "embedded SmolLM2-135M: success rate",
        value="runs/alfworld-embedded/summary/success",
        fmt="{:.1%}",
        args="--parts embedded",
    ),
    Headline(
        result="security",
        what="Attack success on held-out specs, scripted assistant that obeys every payload: "
        "behind the information-flow guard",
        value="splits/held_out/scripted_obeying/flow/overall/attack_success_rate",
        fmt="{:.1%}",
        peer="splits/held_out/scripted_obeying/phrasing/overall/attack_success_rate",
        peer_name="behind the phrasing guard",
        args="--no-model",
    ),
    Headline(
        result="security",
        what="Benign utility on held-out specs behind the information-flow guard",
        value="splits/held_out/scripted_reference/flow/overall/utility_benign",
        fmt="{:.1%}",
        peer="splits/held_out/scripted_reference/none/overall/utility_benign",
        peer_name="without a defence",
        args="--no-model",
    ),
    Headline(
        result="distillation",
        what="The distillation setting: the teacher's success in ALFWorld games entered "
        "k = {setting/chosen_remaining} expert commands before the goal, with scored "
        "choices (training games)",
        value="setting/by_remaining/remaining={setting/chosen_remaining}/success",
        fmt="{:.1%}",
        interval="setting/by_remaining/remaining={setting/chosen_remaining}/ci95",
        args="--only setting",
    ),
    Headline(
        result="distillation_react",
        what="Previous pipeline (ReAct trajectories the teacher rarely wins): distilled "
        "student's ACT match on held-out steps, structured minus token-level KD",
        value="structured_vs_kd_act_match/difference",
        fmt="{:+.1f}",
        unit="points",
        scale=100,
        interval="structured_vs_kd_act_match/ci95",
    ),
)
