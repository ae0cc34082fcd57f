# Malla storage on NativeStore against an upstream-equivalent implementation
# on ETS (Malla 0.0.1 style), in the same run. Run with everything else:
# `make bench`; alone:
#   MIX_ENV=prod mix run bench/malla_bench.exs
if File.exists?(Path.join(__DIR__, "bench_helper.exs")) do
  Code.require_file("bench_helper.exs", __DIR__)
else
  # Self-contained fallback with the subset of BenchHelper used here.
  defmodule BenchHelper do
    @moduledoc false
    def quick?, do: System.get_env("BENCH_QUICK") in ["1", "true", "yes"]
    def ops(n), do: if(quick?(), do: max(div(n, 10), 1), else: n)
    def process_counts, do: Enum.uniq([1, System.schedulers_online()])

    def compare(label, n, procs, base, native, opts \\ []) do
      runs = Keyword.get(opts, :runs, if(quick?(), do: 3, else: 7))
      setup = Keyword.get(opts, :setup, fn -> nil end)
      run_once(n, procs, base, setup)
      run_once(n, procs, native, setup)

      pairs =
        for _ <- 1..runs,
            do: {run_once(n, procs, base, setup), run_once(n, procs, native, setup)}

      {label, median(Enum.map(pairs, &elem(&1, 0))), median(Enum.map(pairs, &elem(&1, 1)))}
    end

    defp run_once(n, procs, work, setup) do
      ctx = setup.()
      share = div(n, procs)

      {us, _} =
        :timer.tc(fn ->
          for p <- 0..(procs - 1) do
            Task.async(fn ->
              first = p * share
              last = first + share - 1
              if is_function(work, 3), do: work.(ctx, first, last), else: work.(first, last)
            end)
          end
          |> Enum.each(&Task.await(&1, :infinity))
        end)

      us * 1000 / (share * procs)
    end

    defp median(l), do: l |> Enum.sort() |> Enum.at(div(length(l), 2))

    def print_table(rows, opts \\ []) do
      if t = opts[:title], do: IO.puts("\n#### #{t}\n")
      IO.puts("| operation | ETS ns/op | NativeStore ns/op | ratio native/ETS |")
      IO.puts("| --- | ---: | ---: | ---: |")

      for {op, b, n} <- rows,
          do: IO.puts("| #{op} | #{round(b)} | #{round(n)} | #{Float.round(n / b, 2)} |")

      if note = opts[:note], do: IO.puts("\n" <> note)
    end
  end
end

defmodule MallaBench.UpstreamService do
  @moduledoc false
  # Upstream-equivalent service storage: a named ETS table owned by the
  # service's GenServer; reads and writes go straight to ETS.
  use GenServer
  def start(name), do: GenServer.start(__MODULE__, name, name: name)

  @impl true
  def init(name) do
    :ets.new(name, [:set, :public, :named_table, {:read_concurrency, true}])
    {:ok, name}
  end

  def get(service, key, default \\ nil) do
    case :ets.lookup(service, key) do
      [{_, v}] -> v
      [] -> default
    end
  end

  def put(service, key, value) do
    :ets.insert(service, {key, value})
    :ok
  end
end

defmodule MallaBench.UpstreamConfig do
  @moduledoc false
  # Upstream-equivalent Malla.Config: a named ETS table owned by a
  # GenServer; get/put go to ETS, update is serialised through the server.
  use GenServer
  @table :malla_bench_upstream_config
  def start, do: GenServer.start(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(_) do
    :ets.new(@table, [:set, :public, :named_table, {:read_concurrency, true}])
    {:ok, nil}
  end

  def get(domain, key, default \\ nil) do
    case :ets.lookup(@table, {domain, key}) do
      [{_, v}] -> v
      [] -> default
    end
  end

  def put(domain, key, value) do
    :ets.insert(@table, {{domain, key}, value})
    :ok
  end

  def update(domain, key, fun), do: GenServer.call(__MODULE__, {:update, domain, key, fun})

  @impl true
  def handle_call({:update, domain, key, fun}, _from, state) do
    put(domain, key, fun.(get(domain, key)))
    {:reply, :ok, state}
  end
end

defmodule MallaBench.UpstreamRegistry do
  @moduledoc false
  # Upstream Malla.Registry: Elixir's Registry.
  def whereis(key) do
    case Registry.lookup(:malla_bench_unique, key) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  def store(key, value), do: Registry.register(:malla_bench_dup, key, value)
  def values(key), do: Registry.lookup(:malla_bench_dup, key)
end

defmodule MallaBench do
  @moduledoc """
  Malla.Service get/put, Malla.Config get and update, Malla.Registry
  whereis, store and values, against the upstream-equivalent ETS / GenServer
  / Registry implementation, with 1 process and one process per scheduler.
  Keys are integers visited in a scrambled order; values are 4-field maps.
  """

  alias MallaBench.{UpstreamConfig, UpstreamRegistry, UpstreamService}

  defmodule Svc do
    @moduledoc false
    use Malla.Service
  end

  @keys 100_000
  @value %{a: 1, b: 2, c: 3, d: 4}

  defp key(i), do: rem(i * 48_271, @keys)

  # Median of 7 timed runs per side (3 with BENCH_QUICK=1, as BenchHelper),
  # after a warm-up: about 12 s in all.
  defp runs, do: if(BenchHelper.quick?(), do: 3, else: 7)

  def run do
    {:ok, up_svc} = UpstreamService.start(:malla_bench_upstream_svc)
    {:ok, up_cfg} = UpstreamConfig.start()
    {:ok, svc} = Malla.Service.start_link(Svc)
    Process.unlink(svc)
    {:ok, reg1} = Registry.start_link(keys: :unique, name: :malla_bench_unique)
    {:ok, reg2} = Registry.start_link(keys: :duplicate, name: :malla_bench_dup)

    try do
      do_run()
    after
      # Leave nothing behind in the VM shared with the other bench files.
      Malla.Service.stop(Svc)
      for pid <- [up_svc, up_cfg, reg1, reg2], do: GenServer.stop(pid)
      for i <- 0..(@keys - 1), do: Malla.Config.del(:bench, i)
      Malla.Config.del(:bench, :shared)
    end
  end

  defp do_run do
    for i <- 0..(@keys - 1) do
      UpstreamService.put(:malla_bench_upstream_svc, i, @value)
      Malla.Service.put(Svc, i, @value)
      UpstreamConfig.put(:bench, i, @value)
      Malla.Config.put(:bench, i, @value)
    end

    n = BenchHelper.ops(100_000)
    up = :malla_bench_upstream_svc

    rows =
      for procs <- BenchHelper.process_counts() do
        [
          BenchHelper.compare(
            "Service.get (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamService.get(up, key(i)) end,
            fn f, l -> for i <- f..l, do: Malla.Service.get(Svc, key(i)) end,
            runs: runs()
          ),
          BenchHelper.compare(
            "Service.put (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamService.put(up, key(i), @value) end,
            fn f, l -> for i <- f..l, do: Malla.Service.put(Svc, key(i), @value) end,
            runs: runs()
          ),
          BenchHelper.compare(
            "Config.get (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamConfig.get(:bench, key(i)) end,
            fn f, l -> for i <- f..l, do: Malla.Config.get(:bench, key(i)) end,
            runs: runs()
          )
        ]
      end
      |> List.flatten()

    BenchHelper.print_table(rows,
      title: "Malla.Service and Malla.Config reads/writes vs upstream (GenServer-owned ETS)",
      baseline: "upstream ETS",
      native: "Malla on NativeStore"
    )

    update_rows()
    registry_rows()
  end

  defp update_rows do
    n = BenchHelper.ops(50_000)

    incr = fn
      nil -> 1
      v -> v + 1
    end

    add_key = fn v -> Map.update(v || %{}, :n, 1, &(&1 + 1)) end

    rows =
      for procs <- BenchHelper.process_counts() do
        [
          BenchHelper.compare(
            "Config.update, one shared key (#{procs}p)",
            n,
            procs,
            fn f, l -> for _ <- f..l, do: UpstreamConfig.update(:bench, :shared, incr) end,
            fn f, l -> for _ <- f..l, do: Malla.Config.update(:bench, :shared, incr) end,
            runs: runs()
          ),
          BenchHelper.compare(
            "Config.update, key per op (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamConfig.update(:bench, key(i), add_key) end,
            fn f, l -> for i <- f..l, do: Malla.Config.update(:bench, key(i), add_key) end,
            runs: runs()
          )
        ]
      end
      |> List.flatten()

    BenchHelper.print_table(rows,
      title: "Malla.Config.update under concurrency vs upstream (GenServer-serialised)",
      baseline: "upstream GenServer",
      native: "Malla CAS",
      note:
        "Target: Malla at least 4x faster (ratio <= 0.25) with one process per scheduler " <>
          "(#{System.schedulers_online()} schedulers here)."
    )

    total = Malla.Config.get(:bench, :shared)
    upstream_total = UpstreamConfig.get(:bench, :shared)

    IO.puts(
      "\nShared-key counters after the runs: upstream #{upstream_total}, Malla #{total} " <>
        "(equal: no update lost under contention)"
    )
  end

  defp registry_rows do
    n = BenchHelper.ops(50_000)
    registry = Malla.Registry.registry()

    # Unique names held by one idle process for the whole run.
    holder = self()

    idle =
      spawn(fn ->
        for i <- 0..(@keys - 1) do
          {:ok, _} = Registry.register(:malla_bench_unique, i, nil)
          {:ok, _} = Malla.Registry.register(i)
        end

        send(holder, :registered)
        Process.sleep(:infinity)
      end)

    receive do
      :registered -> :ok
    end

    # 10 values under each of 1,000 pool keys, stored by an idle process.
    pools =
      spawn(fn ->
        for p <- 0..999, j <- 1..10 do
          UpstreamRegistry.store({:pool, p}, j)
          Malla.Registry.store({:pool, p}, j)
        end

        send(holder, :stored)
        Process.sleep(:infinity)
      end)

    receive do
      :stored -> :ok
    end

    rows =
      for procs <- BenchHelper.process_counts() do
        [
          BenchHelper.compare(
            "Registry.whereis (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamRegistry.whereis(key(i)) end,
            fn f, l -> for i <- f..l, do: Malla.Registry.whereis(key(i)) end,
            runs: runs()
          ),
          BenchHelper.compare(
            "Registry.store (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamRegistry.store({:k, i}, i) end,
            fn f, l -> for i <- f..l, do: Malla.Registry.store({:k, i}, i) end,
            runs: runs()
          ),
          BenchHelper.compare(
            "Registry.values, 10 entries (#{procs}p)",
            n,
            procs,
            fn f, l -> for i <- f..l, do: UpstreamRegistry.values({:pool, rem(i, 1000)}) end,
            fn f, l -> for i <- f..l, do: Malla.Registry.values({:pool, rem(i, 1000)}) end,
            runs: runs()
          )
        ]
      end
      |> List.flatten()

    BenchHelper.print_table(rows,
      title: "Malla.Registry vs upstream (Elixir Registry)",
      baseline: "Elixir Registry",
      native: "Malla (#{inspect(registry)})"
    )

    Process.exit(idle, :kill)
    Process.exit(pools, :kill)
  end
end

# bench/run.exs calls MallaBench.run/0 itself; run it here only when this
# file is the script given to `mix run`.
if Enum.any?(:init.get_plain_arguments(), &(Path.basename(to_string(&1)) == "malla_bench.exs")) do
  MallaBench.run()
end
