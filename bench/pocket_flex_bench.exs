# PocketFlex state storage: merge_state and get_state, native backend vs the
# ETS backend vs an upstream-equivalent GenServer+ETS store, in the same run.
#
#   MIX_ENV=prod mix run bench/pocket_flex_bench.exs      (BENCH_QUICK=1 for a smoke run)
#
# Each of P processes (1, and one per scheduler) works on its own flow
# ("distinct flows"), or all on one flow ("one flow"). A merge writes one of
# 8 keys, so states keep 12 small entries; get_state reads a 12-key state
# (string keys, as in the seed) and a 1-key state. Runs of the three stores are
# interleaved; each number is the median over BenchHelper.runs() runs (7, or
# 3 with BENCH_QUICK=1) of wall-clock time / total operations (aggregate
# ns/op: lower is better). About 15 s in all.
#
# bench/run.exs calls PocketFlexBench.run/0 itself (this file runs it only
# when it is the script given to `mix run`); the upstream store is started
# for the run and stopped afterwards, and every bench state is cleaned up.
Code.require_file("bench_helper.exs", __DIR__)

defmodule PocketFlexBench.UpstreamStore do
  @moduledoc false
  # What upstream PocketFlex's ETS storage does: a named public ETS table
  # (no read_concurrency), reads from the caller, every write through
  # GenServer.call.
  use GenServer
  @table :pocket_flex_bench_upstream

  def start do
    case GenServer.start(__MODULE__, :ok, name: __MODULE__) do
      {:ok, pid} -> {:ok, pid}
      # Left over by an earlier run in this VM: it is stateless, reuse it.
      {:error, {:already_started, pid}} -> {:ok, pid}
    end
  end

  def stop, do: GenServer.stop(__MODULE__)

  def cleanup(id), do: GenServer.call(__MODULE__, {:cleanup, id})

  def get_state(id) do
    case :ets.lookup(@table, id) do
      [{_, s}] -> s
      [] -> %{}
    end
  end

  def update_state(id, s), do: GenServer.call(__MODULE__, {:update, id, s})
  def merge_state(id, u), do: GenServer.call(__MODULE__, {:merge, id, u})

  @impl true
  def init(:ok) do
    :ets.new(@table, [:set, :public, :named_table])
    {:ok, nil}
  end

  @impl true
  def handle_call({:update, id, s}, _from, st) do
    :ets.insert(@table, {id, s})
    {:reply, s, st}
  end

  def handle_call({:cleanup, id}, _from, st) do
    :ets.delete(@table, id)
    {:reply, :ok, st}
  end

  def handle_call({:merge, id, u}, _from, st) do
    merged = Map.merge(get_state(id), u)
    :ets.insert(@table, {id, merged})
    {:reply, merged, st}
  end
end

defmodule PocketFlexBench do
  @moduledoc false
  alias PocketFlex.StateStorage.{ETS, Native}
  alias PocketFlexBench.UpstreamStore

  @stores [
    {"native", Native},
    {"ETS backend", ETS},
    {"upstream GenServer+ETS", UpstreamStore}
  ]
  @updates List.to_tuple(for k <- 0..7, do: %{"k#{k}" => k})
  @initial %{"items" => [1, 2, 3], "status" => "running", "step" => 3, "name" => "bench"}
  @initial_merged Enum.reduce(Tuple.to_list(@updates), @initial, &Map.merge(&2, &1))
  @small %{step: 3}

  def run do
    {:ok, _} = UpstreamStore.start()

    try do
      do_run()
    after
      UpstreamStore.stop()
    end
  end

  defp do_run do
    IO.puts("\n### PocketFlex state storage (schedulers: #{System.schedulers_online()})")

    rows =
      for procs <- BenchHelper.process_counts(),
          {op, n, shared?, initial, shape} <- [
            {:merge_state, BenchHelper.ops(40_000), false, @initial, ""},
            {:merge_state, BenchHelper.ops(40_000), true, @initial, ""},
            {:get_state, BenchHelper.ops(200_000), false, @initial_merged, ", 12-key state"},
            {:get_state, BenchHelper.ops(200_000), false, @small, ", 1-key state"}
          ] do
        results = measure(op, n, procs, shared?, initial)
        [native, ets, upstream] = Enum.map(@stores, fn {name, _} -> results[name] end)

        flows = if shared?, do: "one flow", else: "distinct flows"
        label = "#{op}, #{procs} proc#{if procs > 1, do: "s"}, #{flows}#{shape}"

        [
          label,
          BenchHelper.fmt_ns(native),
          BenchHelper.fmt_ns(ets),
          BenchHelper.fmt_ns(upstream),
          BenchHelper.fmt_ratio(native, ets),
          BenchHelper.fmt_ratio(native, upstream),
          speedup(upstream, native)
        ]
      end

    BenchHelper.print_markdown(
      [
        "operation",
        "native ns/op",
        "ETS backend ns/op",
        "upstream ns/op",
        "native/ETS",
        "native/upstream",
        "speed-up vs upstream"
      ],
      rows,
      note:
        "Targets: merge_state at least 4x faster than upstream GenServer+ETS with one process " <>
          "per scheduler; get_state at most 1.0x the ETS backend (native/ETS <= 1.00)."
    )
  end

  defp speedup(base, native), do: :erlang.float_to_binary(base / native, decimals: 1) <> "x"

  defp id(first, true = _shared?), do: {:bench_flow, :shared, first * 0}
  defp id(first, false), do: {:bench_flow, first}

  defp measure(op, n, procs, shared?, initial) do
    ids = for {first, _} <- BenchHelper.shares(n, procs), uniq: true, do: id(first, shared?)

    setup = fn mod ->
      fn -> Enum.each(ids, &mod.update_state(&1, initial)) end
    end

    work = fn mod ->
      case op do
        :merge_state ->
          fn first, last -> merge_loop(mod, id(first, shared?), first, last) end

        :get_state ->
          fn first, last -> get_loop(mod, id(first, shared?), first, last) end
      end
    end

    # Warm-up, then interleaved timed runs.
    for {_, mod} <- @stores do
      BenchHelper.measure(n, procs, work.(mod), runs: 1, setup: setup.(mod))
    end

    samples =
      for _ <- 1..BenchHelper.runs(), {name, mod} <- @stores do
        {name,
         BenchHelper.measure(n, procs, work.(mod), runs: 1, warmup: false, setup: setup.(mod))}
      end

    # The ETS backend's table and the native one are shared with the
    # application: leave no bench state behind.
    for {_, mod} <- @stores, id <- ids, do: mod.cleanup(id)

    for {name, _} <- @stores, into: %{} do
      {name, BenchHelper.median(for {^name, ns} <- samples, do: ns)}
    end
  end

  defp merge_loop(_mod, _id, i, last) when i > last, do: :ok

  defp merge_loop(mod, id, i, last) do
    mod.merge_state(id, elem(@updates, rem(i, 8)))
    merge_loop(mod, id, i + 1, last)
  end

  defp get_loop(_mod, _id, i, last) when i > last, do: :ok

  defp get_loop(mod, id, i, last) do
    mod.get_state(id)
    get_loop(mod, id, i + 1, last)
  end
end

# bench/run.exs calls PocketFlexBench.run/0 itself (it runs the run/0 of
# every module a bench file defines); run it here only when this file is the
# script given to `mix run`, or it would run twice.
if Enum.any?(
     :init.get_plain_arguments(),
     &(Path.basename(to_string(&1)) == "pocket_flex_bench.exs")
   ) do
  PocketFlexBench.run()
end
