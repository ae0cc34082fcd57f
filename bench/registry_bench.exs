# NativeStore.Registry vs Elixir's Registry, side by side in one run.
# Run with everything else: `make bench`; alone:
#   MIX_ENV=prod mix run bench/registry_bench.exs
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

  @registries [
    {Registry, :unique, :bench_er_u},
    {NR, :unique, :bench_nr_u},
    {Registry, :duplicate, :bench_er_d},
    {NR, :duplicate, :bench_nr_d}
  ]

  def run do
    parts = System.schedulers_online()

    # Idempotent: a registry left running under one of these names (an
    # earlier run in this VM that crashed half-way) is stopped and replaced.
    for {mod, keys, name} <- @registries, do: start_fresh(mod, keys, name, parts)

    # 1,000 unique keys held by one process; 1,000 subscribers of :topic.
    holders = [
      hold(fn ->
        for i <- 0..999, do: {:ok, _} = Registry.register(:bench_er_u, {:held, i}, i)
        for i <- 0..999, do: {:ok, _} = NR.register(:bench_nr_u, {:held, i}, i)
      end)
      | for _ <- 1..@subscribers do
          hold(fn ->
            {:ok, _} = Registry.register(:bench_er_d, :topic, :sub)
            {:ok, _} = NR.register(:bench_nr_d, :topic, :sub)
          end)
        end
    ]

    try do
      do_run(parts)
    after
      # Leave nothing behind in the VM shared with the other bench files.
      for pid <- holders, do: Process.exit(pid, :kill)
      for {_mod, _keys, name} <- @registries, do: stop(name)
    end
  end

  defp start_fresh(mod, keys, name, parts) do
    stop(name)
    {:ok, pid} = mod.start_link(keys: keys, name: name, partitions: parts)
    pid
  end

  # Synchronous stop of a registry (both kinds are named GenServers or
  # supervisors); no-op when none runs under `name`.
  defp stop(name) do
    case Process.whereis(name) do
      nil ->
        :ok

      pid ->
        Process.unlink(pid)
        GenServer.stop(pid, :shutdown)
    end
  catch
    :exit, _ -> :ok
  end

  defp do_run(parts) do
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
        {"cleanup after #{BenchHelper.ops(@cleanup_procs)} killed procs, #{keys}", e, n}
      end

    BenchHelper.print_table(cleanup_rows,
      title: "Cleanup until count/1 == 0 (ms, median; killed from 1 process)",
      baseline: "Registry",
      native: "NativeStore",
      unit: {"ms", 1_000_000}
    )

    memory(parts)
  end

  defp hold(fun) do
    parent = self()

    pid =
      spawn(fn ->
        fun.()
        send(parent, :held)
        Process.sleep(:infinity)
      end)

    receive do: (:held -> :ok)
    pid
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
  # Returns nanoseconds (print_table shows them as ms).
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
    r = :"bench_cleanup_#{inspect(mod)}_#{keys}_#{i}"
    start_fresh(mod, keys, r, parts)
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
    stop(r)
    System.convert_time_unit(t1 - t0, :native, :nanosecond)
  end

  defp wait_empty(mod, r) do
    if mod.count(r) == 0, do: :ok, else: wait_empty(mod, r)
  end

  # Memory per registration, counted exactly: 10,000 registrations held by
  # one process. Registry: the growth of its partitions' key and pid ETS
  # tables (`:ets.info(t, :memory)` words x wordsize; the tables owned by the
  # registry's partition processes, named `<registry>.KeyPartition<i>` and
  # `<registry>.PIDPartition<i>`). NativeStore: the growth of
  # `NativeStore.Registry.memory/1` (bytes held in the native engine).
  defp memory(parts) do
    n = BenchHelper.ops(10_000)

    body =
      for keys <- [:unique, :duplicate] do
        e = exact_mem(Registry, keys, parts, n)
        nat = exact_mem(NR, keys, parts, n)

        [
          "#{keys}, #{n} registrations (#{key_desc(keys)}, value: {:v, i})",
          BenchHelper.fmt_bytes(e / n),
          BenchHelper.fmt_bytes(nat / n),
          BenchHelper.fmt_ratio(nat, e)
        ]
      end

    BenchHelper.print_markdown(
      [
        "memory per registration",
        "Registry key+pid ETS tables B",
        "NativeStore memory/1 B",
        "ratio native/Registry"
      ],
      body,
      title: "Memory per registration (bytes, exact counts)",
      note:
        "_growth per registration of the Registry's partition ETS tables " <>
          "(`:ets.info(t, :memory)` × wordsize, key and pid tables) and of " <>
          "`NativeStore.Registry.memory/1` (bytes held by the native registry)._"
    )
  end

  defp key_desc(:unique), do: "key: integer"
  defp key_desc(:duplicate), do: "100 keys"

  defp reg_key(:unique, i), do: i
  defp reg_key(:duplicate, i), do: rem(i, 100)

  defp exact_mem(mod, keys, parts, n) do
    r = :"bench_exact_mem_#{inspect(mod)}_#{keys}"
    sup = start_fresh(mod, keys, r, parts)
    before = footprint(mod, r, sup)
    parent = self()

    holder =
      spawn(fn ->
        for i <- 1..n, do: {:ok, _} = mod.register(r, reg_key(keys, i), {:v, i})
        send(parent, :done)
        Process.sleep(:infinity)
      end)

    receive do: (:done -> :ok)
    ^n = mod.count(r)
    bytes = footprint(mod, r, sup) - before
    Process.exit(holder, :kill)
    stop(r)
    bytes
  end

  defp footprint(NR, r, _sup), do: NR.memory(r)

  defp footprint(Registry, r, sup) do
    owners = for {_, pid, _, _} <- Supervisor.which_children(sup), is_pid(pid), do: pid
    prefix = "Elixir.#{r}."
    wordsize = :erlang.system_info(:wordsize)

    tables =
      for t <- :ets.all(),
          info = :ets.info(t),
          info != :undefined,
          info[:owner] in owners,
          name = Atom.to_string(info[:name]),
          String.starts_with?(name, prefix <> "KeyPartition") or
            String.starts_with?(name, prefix <> "PIDPartition"),
          do: info[:memory]

    if length(tables) != 2 * length(owners),
      do:
        raise(
          "expected a key and a pid table per partition of #{inspect(r)}, got #{length(tables)}"
        )

    Enum.sum(tables) * wordsize
  end
end

# bench/run.exs calls RegistryBench.run/0 itself; run it here only when this
# file is the script given to `mix run`.
if Enum.any?(
     :init.get_plain_arguments(),
     &(Path.basename(to_string(&1)) == "registry_bench.exs")
   ) do
  RegistryBench.run()
end
