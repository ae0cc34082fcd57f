# Shared helpers for the benchmarks in bench/. Loaded by bench/run.exs, and by
# each bench file with `Code.require_file("bench_helper.exs", __DIR__)` so a
# single file can also be run alone (`MIX_ENV=prod mix run bench/table_bench.exs`).
#
# No Benchee here (no hex): plain :erlang.monotonic_time, median of several runs.
defmodule BenchHelper do
  @moduledoc """
  Timing and reporting helpers shared by every `bench/*_bench.exs`.

  * `measure/4` times `n` operations spread over `procs` processes that start
    together and returns the median ns/op over several runs;
  * `compare/5` times a baseline (ETS, Registry, ...) and NativeStore on the
    same workload, interleaving their runs so machine noise hits both;
  * `print_table/3` prints the results as a markdown table with the ratio
    native/baseline (< 1 means NativeStore is faster).

  ns/op is wall-clock time divided by the total number of operations, so with
  several processes it is the *aggregate* cost per operation (throughput):
  1 process at 500 ns/op and 2 processes at 250 ns/op do the same work per
  process, the second twice as fast overall.

  Environment: `BENCH_QUICK=1` gives a fast smoke run (fewer operations and
  runs); the numbers are then only indicative.
  """

  @doc "True when `BENCH_QUICK=1` (or `true`) is set: smoke run, fewer ops and runs."
  def quick?, do: System.get_env("BENCH_QUICK") in ["1", "true", "yes"]

  @doc "Number of timed runs a median is taken over: 7, or 3 in quick mode."
  def runs, do: if(quick?(), do: 3, else: 7)

  @doc "Scales a number of operations down (by 10) in quick mode."
  def ops(n), do: if(quick?(), do: max(div(n, 10), 1), else: n)

  @doc "Process counts to run with: 1 and one per online scheduler (deduplicated)."
  def process_counts, do: Enum.uniq([1, System.schedulers_online()])

  @doc """
  Times `n` operations spread over `procs` processes.

  `work` is a function of `(first, last)` (or `(ctx, first, last)`, see
  `:setup`) that performs the operations with indices `first..last`
  (inclusive); each of the `procs` processes gets a contiguous share of
  `0..n-1`. Looping inside `work` (rather than calling a closure per
  operation) keeps the harness overhead out of the numbers.

  The processes are spawned first, then released together; the time of a run
  is from the earliest start to the latest finish. Returns the median ns/op
  over `runs` timed runs (after one untimed warm-up run).

  Options:
    * `:runs` — number of timed runs (default `runs/0`);
    * `:setup` — a 0-arity function run (untimed) before every run, warm-up
      included; its result is passed to a 3-arity `work` as `ctx`;
    * `:warmup` — whether to do the warm-up run (default `true`).
  """
  def measure(n, procs, work, opts \\ []) do
    runs = Keyword.get(opts, :runs, runs())
    setup = Keyword.get(opts, :setup, fn -> nil end)
    settle()
    if Keyword.get(opts, :warmup, true), do: run_once(n, procs, work, setup)
    median(for _ <- 1..runs, do: run_once(n, procs, work, setup))
  end

  @doc """
  Times a baseline and NativeStore on the same workload and returns a row
  `{label, baseline_ns_per_op, native_ns_per_op}` for `print_table/3`.

  `base` and `native` are `work` functions as in `measure/4`. Their runs are
  interleaved (baseline, native, baseline, ...) so that noise from a shared
  machine is spread over both. Options are those of `measure/4`, plus
  `:base_setup` / `:native_setup` to give each side its own setup.
  """
  def compare(label, n, procs, base, native, opts \\ []) do
    runs = Keyword.get(opts, :runs, runs())
    setup = Keyword.get(opts, :setup, fn -> nil end)
    base_setup = Keyword.get(opts, :base_setup, setup)
    native_setup = Keyword.get(opts, :native_setup, setup)
    settle()

    if Keyword.get(opts, :warmup, true) do
      run_once(n, procs, base, base_setup)
      run_once(n, procs, native, native_setup)
    end

    pairs =
      for _ <- 1..runs do
        {run_once(n, procs, base, base_setup), run_once(n, procs, native, native_setup)}
      end

    {label, median(Enum.map(pairs, &elem(&1, 0))), median(Enum.map(pairs, &elem(&1, 1)))}
  end

  # Waits until NativeStore's background thread has freed what earlier
  # measurements left it (tables deleted, contents emptied): that freeing
  # must not run during this measurement, as ETS frees a table in the
  # process that deletes it before that process goes on.
  defp settle, do: NativeStore.Nif.reclaim_flush()

  # One timed run: spawn `procs` workers, each waits for :go, runs its share,
  # and reports its own start/end time; elapsed = max(end) - min(start).
  defp run_once(n, procs, work, setup) do
    ctx = setup.()
    parent = self()
    ref = make_ref()

    workers =
      for {first, last} <- shares(n, procs) do
        spawn_link(fn ->
          receive do
            {:go, ^ref} -> :ok
          end

          t0 = :erlang.monotonic_time()
          if is_function(work, 3), do: work.(ctx, first, last), else: work.(first, last)
          t1 = :erlang.monotonic_time()
          send(parent, {:done, ref, t0, t1})
        end)
      end

    Enum.each(workers, &send(&1, {:go, ref}))

    times =
      for _ <- workers do
        receive do
          {:done, ^ref, t0, t1} -> {t0, t1}
        end
      end

    start = times |> Enum.map(&elem(&1, 0)) |> Enum.min()
    stop = times |> Enum.map(&elem(&1, 1)) |> Enum.max()
    :erlang.convert_time_unit(stop - start, :native, :nanosecond) / n
  end

  @doc "Splits `0..n-1` into `procs` contiguous `{first, last}` ranges (empty ones dropped)."
  def shares(n, procs) do
    base = div(n, procs)
    extra = rem(n, procs)

    {ranges, _} =
      Enum.map_reduce(0..(procs - 1), 0, fn p, first ->
        size = base + if(p < extra, do: 1, else: 0)
        {{first, first + size - 1}, first + size}
      end)

    Enum.filter(ranges, fn {f, l} -> l >= f end)
  end

  @doc "Median of a non-empty list of numbers."
  def median(list) do
    sorted = Enum.sort(list)
    len = length(sorted)
    mid = div(len, 2)

    if rem(len, 2) == 1,
      do: Enum.at(sorted, mid),
      else: (Enum.at(sorted, mid - 1) + Enum.at(sorted, mid)) / 2
  end

  @doc """
  Prints `rows` (`{operation, baseline_ns, native_ns}`) as a markdown table:
  operation, baseline ns/op, NativeStore ns/op, ratio native/baseline.

  Options: `:title` (printed above, as a heading line), `:baseline` (column
  name, default `"ETS"`), `:native` (default `"NativeStore"`), `:note`
  (printed below the table), `:unit` (see below).

  `:unit` is `{label, ns_per_unit}`, default `{"ns/op", 1}`: the values in
  `rows` are always nanoseconds (as `compare/6` returns them) and are
  printed divided by `ns_per_unit` under headers `"ETS <label>"`; e.g.
  `unit: {"µs/scan", 1_000}` or `unit: {"ms", 1_000_000}`.
  """
  def print_table(rows, opts \\ []) do
    baseline = Keyword.get(opts, :baseline, "ETS")
    native = Keyword.get(opts, :native, "NativeStore")
    {unit, scale} = Keyword.get(opts, :unit, {"ns/op", 1})

    body =
      for {op, b, n} <- rows do
        [to_string(op), fmt_ns(b / scale), fmt_ns(n / scale), fmt_ratio(n, b)]
      end

    print_markdown(
      ["operation", "#{baseline} #{unit}", "#{native} #{unit}", "ratio native/#{baseline}"],
      body,
      opts
    )
  end

  @doc """
  Prints a generic markdown table from `headers` and `rows` (lists of
  strings); columns after the first are right-aligned. Options: `:title`,
  `:note`.
  """
  def print_markdown(headers, rows, opts \\ []) do
    if title = opts[:title], do: IO.puts("\n#### #{title}\n")
    all = [headers | rows]

    widths =
      Enum.map(0..(length(headers) - 1), fn i ->
        all |> Enum.map(&String.length(Enum.at(&1, i))) |> Enum.max()
      end)

    line = fn cells ->
      cells
      |> Enum.zip(widths)
      |> Enum.with_index()
      |> Enum.map(fn
        {{c, w}, 0} -> String.pad_trailing(c, w)
        {{c, w}, _} -> String.pad_leading(c, w)
      end)
      |> then(&("| " <> Enum.join(&1, " | ") <> " |"))
    end

    sep =
      widths
      |> Enum.with_index()
      |> Enum.map(fn
        {w, 0} -> String.duplicate("-", w)
        {w, _} -> String.duplicate("-", w - 1) <> ":"
      end)
      |> then(&("| " <> Enum.join(&1, " | ") <> " |"))

    IO.puts(line.(headers))
    IO.puts(sep)
    Enum.each(rows, &IO.puts(line.(&1)))
    if note = opts[:note], do: IO.puts("\n" <> note)
    :ok
  end

  @doc "Formats ns/op: no decimals from 100 up, one decimal below."
  def fmt_ns(ns) when ns >= 100, do: :erlang.float_to_binary(ns / 1, decimals: 0)
  def fmt_ns(ns), do: :erlang.float_to_binary(ns / 1, decimals: 1)

  @doc "Formats the ratio `native / base` with two decimals."
  def fmt_ratio(_native, base) when base == 0, do: "n/a"
  def fmt_ratio(native, base), do: :erlang.float_to_binary(native / base, decimals: 2)

  @doc "Formats a byte count with no decimals."
  def fmt_bytes(b), do: :erlang.float_to_binary(b / 1, decimals: 0)
end
