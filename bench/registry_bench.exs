# NativeStore.Registry vs Elixir's Registry, side by side in one run.
#
#   MIX_ENV=prod MIX_BUILD_PATH=/tmp/build_regbench mix run bench/registry_bench.exs
#
# ns/op are medians over several interleaved runs (BenchHelper.compare/6);
# with N processes they are aggregate (wall time / total ops). Both
# registries use `partitions: System.schedulers_online()` (NativeStore
# accepts and ignores it).
Code.require_file("bench_helper.exs", __DIR__)

defmodule RegistryBench do
  alias NativeStore.Registry, as: NR

  @subscribers 1_000
  @cleanup_procs 10_000

  def run do
    parts = System.schedulers_online()
    {:ok, _} = Registry.start_link(keys: :unique, name: :bench_er_u, partitions: parts)
    {:ok, _} = NR.start_link(keys: :unique, name: :bench_nr_u, partitions: parts)
    {:ok, _} = Registry.start_link(keys: :duplicate, name: :bench_er_d, partitions: parts)
    {:ok, _} = NR.start_link(keys: :duplicate, name: :bench_nr_d, partitions: parts)

    # 1,000 unique keys held by one process; 1,000 subscribers of :topic.
    hold(fn ->
      for i <- 0..999, do: Registry.register(:bench_er_u, {:held, i}, i)
      for i <- 0..999, do: NR.register(:bench_nr_u, {:held, i}, i)
    end)

    for _ <- 1..@subscribers do
      hold(fn ->
        Registry.register(:bench_er_d, :topic, :sub)
        NR.register(:bench_nr_d, :topic, :sub)
      end)
    end

    rows =
      for procs <- BenchHelper.process_counts() do
        [
          BenchHelper.compare(
            "register+lookup+unregister (#{procs} proc)",
            BenchHelper.ops(100_000),
            procs,
            cycle(Registry, :bench_er_u),
            cycle(NR, :bench_nr_u)
          ),
          BenchHelper.compare(
            "unique lookup (#{procs} proc)",
            BenchHelper.ops(500_000),
            procs,
            lookup(Registry, :bench_er_u),
            lookup(NR, :bench_nr_u)
          ),
          BenchHelper.compare(
            "duplicate lookup, 1,000 subscribers (#{procs} proc)",
            BenchHelper.ops(5_000),
            procs,
            dup_lookup(Registry, :bench_er_d),
            dup_lookup(NR, :bench_nr_d)
          ),
          BenchHelper.compare(
            "dispatch to 1,000 subscribers (#{procs} proc)",
            BenchHelper.ops(1_000),
            procs,
            dispatch(Registry, :bench_er_d),
            dispatch(NR, :bench_nr_d)
          )
        ]
      end
      |> List.flatten()

    BenchHelper.print_table(rows,
      title: "NativeStore.Registry vs Registry (ns/op, median)",
      baseline: "Registry",
      native: "NativeStore"
    )

    cleanup_rows =
      for keys <- [:unique, :duplicate] do
        {e, n} = cleanup(keys, parts)
        {"cleanup after #{@cleanup_procs} killed procs, #{keys} (ms)", e, n}
      end

    BenchHelper.print_table(cleanup_rows,
      title: "Cleanup until count/1 == 0 (ms, median; killed from 1 process)",
      baseline: "Registry",
      native: "NativeStore"
    )

    memory(parts)
  end

  defp hold(fun) do
    parent = self()

    spawn(fn ->
      fun.()
      send(parent, :held)
      Process.sleep(:infinity)
    end)

    receive do: (:held -> :ok)
  end

  defp cycle(mod, r) do
    fn first, last ->
      for i <- first..last do
        {:ok, _} = mod.register(r, i, i)
        [_] = mod.lookup(r, i)
        :ok = mod.unregister(r, i)
      end
    end
  end

  defp lookup(mod, r) do
    fn first, last ->
      for i <- first..last, do: [_] = mod.lookup(r, {:held, rem(i, 1000)})
    end
  end

  defp dup_lookup(mod, r) do
    fn first, last ->
      for _ <- first..last, do: mod.lookup(r, :topic)
    end
  end

  defp dispatch(mod, r) do
    fn first, last ->
      for _ <- first..last do
        mod.dispatch(r, :topic, fn entries -> for {pid, _} <- entries, do: send(pid, :msg) end)
      end
    end
  end

  # Spawns 10,000 processes that each register (one key each, or the same
  # key for :duplicate), kills them all and times until count/1 == 0.
  defp cleanup(keys, parts) do
    runs = BenchHelper.runs()

    times =
      for i <- 1..runs do
        e = time_cleanup(Registry, keys, parts, i)
        n = time_cleanup(NR, keys, parts, i)
        {e, n}
      end

    {BenchHelper.median(Enum.map(times, &elem(&1, 0))),
     BenchHelper.median(Enum.map(times, &elem(&1, 1)))}
  end

  defp time_cleanup(mod, keys, parts, i) do
    r = :"bench_cleanup_#{mod}_#{keys}_#{i}"
    {:ok, sup} = mod.start_link(keys: keys, name: r, partitions: parts)
    parent = self()
    n = BenchHelper.ops(@cleanup_procs)

    pids =
      for j <- 1..n do
        key = if keys == :unique, do: j, else: :topic

        spawn(fn ->
          {:ok, _} = mod.register(r, key, j)
          send(parent, :registered)
          Process.sleep(:infinity)
        end)
      end

    for _ <- pids, do: receive(do: (:registered -> :ok))
    ^n = mod.count(r)
    t0 = System.monotonic_time()
    for p <- pids, do: Process.exit(p, :kill)
    wait_empty(mod, r)
    t1 = System.monotonic_time()
    Process.unlink(sup)
    Process.exit(sup, :shutdown)
    System.convert_time_unit(t1 - t0, :native, :microsecond) / 1000
  end

  defp wait_empty(mod, r) do
    if mod.count(r) == 0, do: :ok, else: wait_empty(mod, r)
  end

  # Memory per registration: 100,000 registrations held by one process.
  # Registry: :erlang.memory(:ets) delta (and RSS). NativeStore allocates
  # outside the BEAM allocators (not in :erlang.memory), so the OS resident
  # set size delta is the honest measure; it is coarse (page granularity,
  # allocator caching), hence the large count.
  defp memory(parts) do
    n = BenchHelper.ops(100_000)

    rows =
      for keys <- [:unique, :duplicate] do
        e = mem_of(Registry, keys, parts, n)
        nat = mem_of(NR, keys, parts, n)
        {keys, e, nat}
      end

    body =
      for {keys, {e_ets, e_rss}, {_n_ets, n_rss}} <- rows do
        [
          "#{keys}, #{n} registrations (key: integer, value: {:v, i})",
          BenchHelper.fmt_bytes(e_ets / n),
          BenchHelper.fmt_bytes(e_rss / n),
          BenchHelper.fmt_bytes(n_rss / n),
          BenchHelper.fmt_ratio(n_rss, e_rss)
        ]
      end

    BenchHelper.print_markdown(
      [
        "memory per registration",
        "Registry ETS B",
        "Registry RSS B",
        "NativeStore RSS B",
        "ratio (RSS)"
      ],
      body,
      title: "Memory per registration (bytes)"
    )
  end

  defp mem_of(mod, keys, parts, n) do
    r = :"bench_mem_#{mod}_#{keys}"
    {:ok, sup} = mod.start_link(keys: keys, name: r, partitions: parts)
    :erlang.garbage_collect()
    ets0 = :erlang.memory(:ets)
    rss0 = rss()
    parent = self()

    holder =
      spawn(fn ->
        for i <- 1..n,
            do: {:ok, _} = mod.register(r, if(keys == :unique, do: i, else: rem(i, 100)), {:v, i})

        :erlang.garbage_collect()
        send(parent, :done)
        Process.sleep(:infinity)
      end)

    receive do: (:done -> :ok)
    # The holder's heap is not registry memory: subtract it.
    {:memory, heap} = Process.info(holder, :memory)
    ets1 = :erlang.memory(:ets)
    rss1 = rss()
    Process.exit(holder, :kill)
    Process.sleep(200)
    Process.unlink(sup)
    Process.exit(sup, :shutdown)
    {ets1 - ets0, rss1 - rss0 - heap}
  end

  defp rss do
    [_, resident | _] = File.read!("/proc/self/statm") |> String.split()
    String.to_integer(resident) * 4096
  end
end

RegistryBench.run()
