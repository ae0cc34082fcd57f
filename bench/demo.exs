# make demo: shows NativeStore at work and times it against ETS / Registry.
alias NativeStore.{Registry, Table}

say = fn label, value -> IO.puts(String.pad_trailing(label, 52) <> inspect(value)) end

IO.puts("== NativeStore.Table: a drop-in for :ets ==")
tab = Table.new(:demo, [:set, :public])
Table.insert(tab, [{:alice, %{role: :admin}, 0}, {:bob, %{role: :user}, 0}])
say.("lookup(tab, :alice)", Table.lookup(tab, :alice))
say.("update_counter(tab, :bob, {3, 1})", Table.update_counter(tab, :bob, {3, 1}))
say.("insert_new(tab, {:alice, nil, 0})", Table.insert_new(tab, {:alice, nil, 0}))

say.(
  "select(tab, spec): keys whose counter > 0",
  Table.select(tab, [{{:"$1", :_, :"$2"}, [{:>, :"$2", 0}], [:"$1"]}])
)

ord = Table.new(:demo_ordered, [:ordered_set])
Table.insert(ord, [{3, :c}, {1.0, :a}, {2, :b}])
say.("ordered_set tab2list (term order, 1.0 == 1)", Table.tab2list(ord))
say.("ordered_set lookup(ord, 1)", Table.lookup(ord, 1))

# safe_fixtable/2: a first/next walk may delete what it visits.
walk = Table.new(:demo_walk, [:public])
Table.insert(walk, for(i <- 1..1000, do: {i, rem(i, 3)}))
Table.safe_fixtable(walk, true)

deleted =
  Stream.unfold(Table.first(walk), fn
    :"$end_of_table" ->
      nil

    k ->
      if Table.lookup_element(walk, k, 2) == 0, do: Table.delete(walk, k)
      {k, Table.next(walk, k)}
  end)
  |> Enum.count()

Table.safe_fixtable(walk, false)
say.("safe_fixtable walk deleting 1/3: {visited, size}", {deleted, Table.info(walk, :size)})

# The file functions write ETS's own format: :ets reads NativeStore's file.
file = Path.join(System.tmp_dir!(), "native_store_demo.tab") |> to_charlist()
:ok = Table.tab2file(walk, file)
{:ok, from_file} = :ets.file2tab(file)
say.(":ets.file2tab of NativeStore's tab2file: size", :ets.info(from_file, :size))
File.rm(file)

# Ownership: the table goes to the heir when its owner dies (NIF monitor).
me = self()

owner =
  spawn(fn ->
    send(me, {:tab, Table.new(:demo_heir, [{:heir, me, :inherited}])})
    receive do: (:stop -> :ok)
  end)

heir_tab = receive do: ({:tab, t} -> t)
send(owner, :stop)

receive do
  {:"ETS-TRANSFER", ^heir_tab, ^owner, :inherited} ->
    say.("heir received ETS-TRANSFER, owner now", Table.info(heir_tab, :owner) == self() && :me)
after
  1000 -> IO.puts("no transfer?")
end

IO.puts("\n== NativeStore.Registry: a drop-in for Registry ==")
{:ok, _} = Registry.start_link(keys: :unique, name: Demo.Registry)
{:ok, agent} = Agent.start(fn -> 0 end, name: {:via, Registry, {Demo.Registry, :counter}})

say.(
  "whereis_name({Demo.Registry, :counter}) == agent",
  Registry.whereis_name({Demo.Registry, :counter}) == agent
)

Process.exit(agent, :kill)
Process.sleep(10)
say.("after the agent is killed: lookup", Registry.lookup(Demo.Registry, :counter))

IO.puts("\n== Malla and PocketFlex on NativeStore ==")
Malla.Config.put(:demo, :hits, 0)

1..100
|> Enum.map(fn _ -> Task.async(fn -> Malla.Config.update(:demo, :hits, &(&1 + 1)) end) end)
|> Enum.each(&Task.await/1)

say.("Malla.Config after 100 concurrent updates", Malla.Config.get(:demo, :hits))
flow = PocketFlex.StateStorage.generate_flow_id("demo")

1..100
|> Enum.map(fn i ->
  Task.async(fn -> PocketFlex.StateStorage.merge_state(flow, %{"k#{i}" => i}) end)
end)
|> Enum.each(&Task.await/1)

say.(
  "PocketFlex state keys after 100 concurrent merges",
  map_size(PocketFlex.StateStorage.get_state(flow))
)

PocketFlex.StateStorage.cleanup(flow)

n = 100_000
value = %{a: 1, b: 2, c: 3, d: 4}
ets = :ets.new(:demo_ets, [:set, :public])
nat = Table.new(:demo_nat, [:set, :public])

time = fn fun ->
  for _ <- 1..5 do
    {us, _} = :timer.tc(fun)
    us
  end
  |> Enum.sort()
  |> Enum.at(2)
end

rows = [
  {"insert", fn -> for i <- 1..n, do: :ets.insert(ets, {i, value}) end,
   fn -> for i <- 1..n, do: Table.insert(nat, {i, value}) end},
  {"lookup", fn -> for i <- 1..n, do: :ets.lookup(ets, i) end,
   fn -> for i <- 1..n, do: Table.lookup(nat, i) end},
  {"update_counter", fn -> for _ <- 1..n, do: :ets.update_counter(ets, :c, 1, {:c, 0}) end,
   fn -> for _ <- 1..n, do: Table.update_counter(nat, :c, 1, {:c, 0}) end}
]

{:ok, _} = Elixir.Registry.start_link(keys: :unique, name: Demo.ElixirRegistry)

rows =
  rows ++
    [
      {"registry register+lookup+unregister",
       fn ->
         for i <- 1..div(n, 10) do
           Elixir.Registry.register(Demo.ElixirRegistry, i, :v)
           Elixir.Registry.lookup(Demo.ElixirRegistry, i)
           Elixir.Registry.unregister(Demo.ElixirRegistry, i)
         end
       end,
       fn ->
         for i <- 1..div(n, 10) do
           Registry.register(Demo.Registry, i, :v)
           Registry.lookup(Demo.Registry, i)
           Registry.unregister(Demo.Registry, i)
         end
       end, div(n, 10)}
    ]

IO.puts("\nTimings, 1 process, median of 5 (ns/op; ratio < 1 means NativeStore is faster; the")
IO.puts("machine may be shared and noisy: see `make bench` and the README for full numbers)")

IO.puts(
  String.pad_trailing("op", 38) <>
    String.pad_leading("baseline", 10) <>
    String.pad_leading("native", 10) <> String.pad_leading("ratio", 8)
)

for row <- rows do
  {name, e, f, ops} =
    case row do
      {name, e, f} -> {name, e, f, n}
      {name, e, f, ops} -> {name, e, f, ops}
    end

  te = time.(e) * 1000 / ops
  tn = time.(f) * 1000 / ops

  IO.puts(
    String.pad_trailing(name, 38) <>
      String.pad_leading(:erlang.float_to_binary(te, decimals: 0), 10) <>
      String.pad_leading(:erlang.float_to_binary(tn, decimals: 0), 10) <>
      String.pad_leading(:erlang.float_to_binary(tn / te, decimals: 2), 8)
  )
end
