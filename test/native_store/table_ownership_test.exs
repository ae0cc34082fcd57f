defmodule NativeStore.TableOwnershipTest do
  @moduledoc "Table ownership with real processes: deletion on owner exit, heirs."
  use ExUnit.Case, async: true

  alias NativeStore.Table

  defp uniq_name(tag), do: :"table_own_#{tag}_#{System.unique_integer([:positive])}"

  # Polls `fun` every 5 ms until it returns a truthy value, for up to `ms`.
  defp eventually(fun, ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + ms
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        flunk("condition not reached in time")

      true ->
        Process.sleep(5)
        poll(fun, deadline)
    end
  end

  # Spawns an owner that creates a table with `opts`, reports it, then waits
  # for an instruction: :exit_normal, :crash, or anything else (killed).
  defp spawn_owner(name, opts) do
    parent = self()

    pid =
      spawn(fn ->
        tab = Table.new(name, opts)
        Table.insert(tab, {:key, :value})
        send(parent, {:table, self(), tab})

        receive do
          :exit_normal -> :ok
          # An abnormal exit (a raise would do the same, with a log line).
          :crash -> exit(:crashed_on_purpose)
        end
      end)

    receive do
      {:table, ^pid, tab} -> {pid, tab}
    after
      2_000 -> flunk("owner did not start")
    end
  end

  defp stop(pid, how) do
    ref = Process.monitor(pid)

    case how do
      :normal -> send(pid, :exit_normal)
      :crash -> send(pid, :crash)
      :kill -> Process.exit(pid, :kill)
    end

    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 2_000
  end

  for how <- [:normal, :crash, :kill] do
    test "table is deleted when the owner exits (#{how})" do
      {owner, tab} = spawn_owner(:owned, [:public])
      assert Table.info(tab, :owner) == owner
      assert Table.lookup(tab, :key) == [{:key, :value}]
      stop(owner, unquote(how))
      eventually(fn -> Table.info(tab) == :undefined end)
      assert_raise ArgumentError, fn -> Table.lookup(tab, :key) end
      refute tab in Table.all()
    end
  end

  test "a named table's name becomes free after its owner dies" do
    name = uniq_name(:named)

    for how <- [:normal, :crash, :kill] do
      {owner, ^name} = spawn_owner(name, [:named_table, :public])
      assert Table.whereis(name) |> is_reference()
      assert_raise ArgumentError, fn -> Table.new(name, [:named_table]) end
      stop(owner, how)
      eventually(fn -> Table.whereis(name) == :undefined end)
      assert Table.info(name) == :undefined
      # The name can be taken again, here and now.
      assert Table.new(name, [:named_table]) == name
      Table.delete(name)
    end
  end

  test "heir receives ETS-TRANSFER and becomes the owner" do
    me = self()
    {owner, tab} = spawn_owner(:inherited, [:public, {:heir, me, {:some, "data"}}])
    assert Table.info(tab, :heir) == me
    stop(owner, :normal)
    assert_receive {:"ETS-TRANSFER", ^tab, ^owner, {:some, "data"}}, 2_000
    assert Table.info(tab, :owner) == me
    # The heir setting stays (it now names the owner itself), as :ets keeps it.
    assert Table.info(tab, :heir) == me
    assert Table.lookup(tab, :key) == [{:key, :value}]
    # The new owner's rights: it may write a protected table, and its own
    # death deletes the table.
    assert Table.insert(tab, {:more, 1})
  end

  test "after an inheritance the heir setting names the new owner, as in :ets" do
    me = self()

    heir_after = fn mod ->
      owner =
        spawn(fn ->
          send(me, {:made, mod.new(:heir_after, [:public, {:heir, me, :d}])})
          receive do: (:die -> :ok)
        end)

      t = receive do: ({:made, t} -> t)
      send(owner, :die)
      assert_receive {:"ETS-TRANSFER", ^t, ^owner, :d}, 2_000
      result = {mod.info(t, :owner) == me, mod.info(t, :heir) == me}
      mod.delete(t)
      result
    end

    assert heir_after.(Table) == heir_after.(:ets)
    assert heir_after.(:ets) == {true, true}
  end

  test "ETS-TRANSFER message has the same shape as :ets's" do
    me = self()

    parent_side = fn mod ->
      owner =
        spawn(fn ->
          t = mod.new(:shape, [{:heir, me, :d}])
          send(me, {:made, t})
          receive do: (:go -> :ok)
        end)

      tab = receive do: ({:made, t} -> t)
      send(owner, :go)

      receive do
        {:"ETS-TRANSFER", ^tab, ^owner, :d} = msg -> {msg, mod.info(tab, :owner)}
      after
        2_000 -> flunk("no transfer from #{inspect(mod)}")
      end
    end

    {{tag1, _, _, d1}, o1} = parent_side.(:ets)
    {{tag2, _, _, d2}, o2} = parent_side.(Table)
    assert {tag1, d1, o1} == {tag2, d2, o2}
  end

  test "heir that inherited and then dies deletes the table (no heir left)" do
    heir_parent = self()

    heir =
      spawn(fn ->
        receive do
          {:"ETS-TRANSFER", tab, _, _} ->
            send(heir_parent, {:inherited, tab})
            receive do: (:exit_normal -> :ok)
        end
      end)

    {owner, tab} = spawn_owner(:chain, [:public, {:heir, heir, nil}])
    stop(owner, :kill)
    assert_receive {:inherited, ^tab}, 2_000
    eventually(fn -> Table.info(tab, :owner) == heir end)
    stop(heir, :normal)
    eventually(fn -> Table.info(tab) == :undefined end)
  end

  test "heir already dead when the table is created: table deleted with its owner" do
    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, _, _, _}
    {owner, tab} = spawn_owner(:dead_heir, [:public, {:heir, dead, :data}])
    stop(owner, :normal)
    eventually(fn -> Table.info(tab) == :undefined end)
  end

  # "heir dies before the owner" is known bug 5: see table_known_bugs_test.exs.

  test "a named table is inherited under its name" do
    name = uniq_name(:named_heir)
    me = self()
    {owner, ^name} = spawn_owner(name, [:named_table, :protected, {:heir, me, 42}])
    stop(owner, :kill)
    assert_receive {:"ETS-TRANSFER", ref, ^owner, 42}, 2_000
    assert ref == Table.whereis(name) or ref == name
    assert Table.info(name, :owner) == me
    assert Table.insert(name, {:mine, 1})
    Table.delete(name)
    assert Table.whereis(name) == :undefined
  end

  test "tables of a process that owns many are all deleted" do
    parent = self()

    owner =
      spawn(fn ->
        tabs = for i <- 1..50, do: Table.new(:"many_#{i}", [:public])
        send(parent, {:tabs, tabs})
        receive do: (:exit_normal -> :ok)
      end)

    tabs = receive do: ({:tabs, t} -> t)
    assert Enum.all?(tabs, &(Table.info(&1, :owner) == owner))
    stop(owner, :normal)
    eventually(fn -> Enum.all?(tabs, &(Table.info(&1) == :undefined)) end)
  end

  test "deleting the table explicitly, then the owner exits: nothing breaks" do
    {owner, tab} = spawn_owner(:explicit, [:public])
    assert Table.delete(tab)
    stop(owner, :normal)
    assert Table.info(tab) == :undefined
  end
end
