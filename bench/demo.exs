# make demo: shows NativeStore.Table at work and times it against ETS.
alias NativeStore.Table

IO.puts("== NativeStore.Table, a drop-in for :ets set tables ==")
tab = Table.new(:demo, [:set, :public])
Table.insert(tab, [{:alice, %{role: :admin}, 0}, {:bob, %{role: :user}, 0}])
IO.puts("lookup(:alice)          -> #{inspect(Table.lookup(tab, :alice))}")
IO.puts("update_counter(:bob, {3, 1}) -> #{inspect(Table.update_counter(tab, :bob, {3, 1}))}")
IO.puts("insert_new(:alice)      -> #{inspect(Table.insert_new(tab, {:alice, nil, 0}))}")
IO.puts("take(:bob)              -> #{inspect(Table.take(tab, :bob))}")
IO.puts("info(:size)             -> #{Table.info(tab, :size)}")

owner = spawn(fn -> receive do: (:stop -> :ok) end)
heir_tab = Table.new(:demo_heir, [:public, {:heir, self(), :inherited}])
Table.insert(heir_tab, {:k, :v})
IO.puts("heir demo: created by #{inspect(self())}")
_ = owner

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
  {"update_counter", fn -> for i <- 1..n, do: :ets.update_counter(ets, :c, 1, {:c, 0}) end,
   fn -> for i <- 1..n, do: Table.update_counter(nat, :c, 1, {:c, 0}) end}
]

IO.puts(
  "\n#{n} operations, 1 process, median of 5 (ns/op; ratio < 1 means NativeStore is faster)"
)

IO.puts(
  String.pad_trailing("op", 16) <>
    String.pad_leading("ets", 10) <>
    String.pad_leading("native", 10) <> String.pad_leading("ratio", 8)
)

for {name, e, f} <- rows do
  te = time.(e) * 1000 / n
  tn = time.(f) * 1000 / n

  IO.puts(
    String.pad_trailing(name, 16) <>
      String.pad_leading(:erlang.float_to_binary(te, decimals: 0), 10) <>
      String.pad_leading(:erlang.float_to_binary(tn, decimals: 0), 10) <>
      String.pad_leading(:erlang.float_to_binary(tn / te, decimals: 2), 8)
  )
end
