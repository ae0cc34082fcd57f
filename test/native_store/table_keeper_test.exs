defmodule NativeStore.TableKeeperTest do
  # Every test runs its own keeper pair on its own table.
  use ExUnit.Case, async: true
  import ExUnit.CaptureLog

  alias NativeStore.Table
  alias NativeStore.Table.Keeper

  doctest NativeStore.Table.Keeper

  setup context do
    n = System.unique_integer([:positive])
    table = :"keeper_test_#{n}"
    primary = :"Elixir.KeeperTest.Primary#{n}"
    secondary = :"Elixir.KeeperTest.Secondary#{n}"
    test_pid = self()

    opts =
      [
        table: table,
        table_opts: [:set, {:read_concurrency, true}, {:write_concurrency, true}],
        heir_data: {:kept, table},
        check_interval: 20,
        on_table: fn ref -> send(test_pid, {:on_table, self(), ref}) end,
        names: {primary, secondary}
      ] ++ Map.get(context, :keeper_opts, [])

    sup_spec = %{
      id: :keepers,
      type: :supervisor,
      start:
        {Supervisor, :start_link,
         [Keeper.child_specs(opts), [strategy: :one_for_one, max_restarts: 100, max_seconds: 5]]}
    }

    sup = start_supervised!(sup_spec)
    %{table: table, primary: primary, secondary: secondary, sup: sup}
  end

  test "at start-up the primary owns the table and the secondary is its heir", c do
    primary = Process.whereis(c.primary)
    secondary = Process.whereis(c.secondary)
    info = Table.info(c.table)
    assert info[:owner] == primary
    assert info[:heir] == secondary
    assert info[:protection] == :public
    assert info[:named_table] == true
    assert info[:read_concurrency] == true
    assert info[:type] == :set
    # Only the creating keeper reports the table; the secondary started first.
    assert_receive {:on_table, ^primary, ref} when is_reference(ref)
    refute_received {:on_table, ^secondary, _}

    # The table is public: any process reads and writes it.
    Task.async(fn -> Table.insert(c.table, {:k, :from_task}) end) |> Task.await()
    assert Table.lookup(c.table, :k) == [{:k, :from_task}]
  end

  test "child specs: ids are the names, the secondary comes first" do
    [s, p] = Keeper.child_specs(table: :t, names: {A, B})
    assert s.id == B and p.id == A
    assert {Keeper, :start_link, [s_opts]} = s.start
    assert s_opts[:role] == :secondary and s_opts[:name] == B and s_opts[:peer] == A
    assert {Keeper, :start_link, [p_opts]} = p.start
    assert p_opts[:role] == :primary and p_opts[:name] == A and p_opts[:peer] == B
  end

  test "invalid options raise ArgumentError" do
    base = [table: :t, role: :primary, name: A, peer: B]
    assert_raise ArgumentError, fn -> Keeper.child_spec(Keyword.delete(base, :table)) end
    assert_raise ArgumentError, fn -> Keeper.child_spec(Keyword.put(base, :role, :a)) end
    assert_raise ArgumentError, fn -> Keeper.child_spec(Keyword.put(base, :peer, A)) end

    for bad <- [:private, :protected, {:heir, self(), nil}, {:heir, :none}] do
      assert_raise ArgumentError, fn -> Keeper.child_spec([table_opts: [bad]] ++ base) end
    end

    assert_raise ArgumentError, fn -> Keeper.child_spec([check_interval: 0] ++ base) end
    assert_raise ArgumentError, fn -> Keeper.child_spec([on_table: fn -> :ok end] ++ base) end
    assert_raise ArgumentError, fn -> Keeper.child_specs(table: :t, names: {A, A}) end
    assert_raise ArgumentError, fn -> Keeper.child_specs(table: :t) end
  end

  test "the data survives a kill of the owner; the restarted keeper becomes heir", c do
    fill(c.table, 1_000)
    owner = Table.info(c.table, :owner)
    heir = Table.info(c.table, :heir)
    kill(owner)

    wait_until(fn -> Table.info(c.table, :owner) == heir end)
    assert_receive {:on_table, ^heir, ref} when is_reference(ref)
    assert_filled(c.table, 1_000)

    wait_redundant(c)
    assert Table.info(c.table, :owner) == heir
    refute Table.info(c.table, :heir) == owner
    assert_filled(c.table, 1_000)
  end

  test "the data survives a kill of the heir; the restarted keeper becomes heir again", c do
    fill(c.table, 1_000)
    owner = Table.info(c.table, :owner)
    heir = Table.info(c.table, :heir)
    kill(heir)

    wait_redundant(c)
    assert Table.info(c.table, :owner) == owner
    refute Table.info(c.table, :heir) == heir
    assert_filled(c.table, 1_000)
  end

  test "the data survives 10 alternating kills of the owner and of the heir", c do
    fill(c.table, 1_000)

    for round <- 1..10 do
      owner = Table.info(c.table, :owner)
      heir = Table.info(c.table, :heir)
      {victim, survivor} = if rem(round, 2) == 1, do: {owner, heir}, else: {heir, owner}
      kill(victim)
      wait_redundant(c)

      assert Table.info(c.table, :owner) == survivor
      refute victim in [Table.info(c.table, :owner), Table.info(c.table, :heir)]
      assert_filled(c.table, 1_000)
      assert Table.update_counter(c.table, :rounds, 1, {:rounds, 0}) == round
    end
  end

  test "writers go on while the owner is killed", c do
    writers =
      for w <- 1..4 do
        Task.async(fn ->
          for i <- 1..2_000, do: Table.insert(c.table, {{w, i}, i})
          :ok
        end)
      end

    kill(Table.info(c.table, :owner))
    Enum.each(writers, &assert(Task.await(&1, 10_000) == :ok))
    assert Table.info(c.table, :size) == 8_000
    wait_redundant(c)
  end

  test "the data is lost only when both keepers are gone at once: the table is recreated empty",
       c do
    fill(c.table, 100)
    heir = Table.info(c.table, :heir)
    owner = Table.info(c.table, :owner)

    log =
      capture_log(fn ->
        # Both die together: nobody inherits the table, which is deleted (as
        # in ETS); the restarted keepers recreate it, empty.
        kill_all([heir, owner])
        wait_redundant(c)
      end)

    assert Table.info(c.table, :size) == 0
    assert Table.lookup(c.table, 1) == []
    assert log == "" or log =~ "recreating it empty"
    # And the new table is kept like the old one.
    Table.insert(c.table, {:new, 1})
    kill(Table.info(c.table, :owner))
    wait_redundant(c)
    assert Table.lookup(c.table, :new) == [{:new, 1}]
  end

  test "a keeper left alone recreates a lost table at its next check, with a warning", c do
    fill(c.table, 10)

    [heir_name] =
      for n <- [c.primary, c.secondary], keeper(n) == Table.info(c.table, :heir), do: n

    [owner_name] = [c.primary, c.secondary] -- [heir_name]

    log =
      capture_log(fn ->
        :ok = Supervisor.terminate_child(c.sup, heir_name)
        :ok = Supervisor.terminate_child(c.sup, owner_name)
        wait_until(fn -> Table.info(c.table) == :undefined end)
        # The secondary alone does not create the table at start-up; a keeper
        # restarting after a loss (or its check) does.
        {:ok, _} = Supervisor.restart_child(c.sup, c.secondary)
        wait_until(fn -> Table.info(c.table) != :undefined end)
        assert Table.info(c.table, :owner) == keeper(c.secondary)
        assert Table.info(c.table, :size) == 0
        {:ok, _} = Supervisor.restart_child(c.sup, c.primary)
        wait_redundant(c)
      end)

    assert log =~ "#{inspect(c.table)} lost"
    assert log =~ "recreating it empty"
  end

  @tag keeper_opts: [on_table: nil]
  test "stopping the supervisor of the pair deletes the table", c do
    fill(c.table, 10)
    :ok = stop_supervised(:keepers)
    wait_until(fn -> Table.info(c.table) == :undefined end)
  end

  defp fill(table, n), do: for(i <- 1..n, do: Table.insert(table, {i, i * i}))

  defp assert_filled(table, n) do
    for i <- 1..n, do: assert(Table.lookup(table, i) == [{i, i * i}])
  end

  defp keeper(name), do: Process.whereis(name)

  defp kill(pid), do: kill_all([pid])

  defp kill_all(pids) do
    refs = for pid <- pids, do: {pid, Process.monitor(pid)}
    for pid <- pids, do: Process.exit(pid, :kill)
    for {pid, ref} <- refs, do: assert_receive({:DOWN, ^ref, :process, ^pid, :killed}, 1_000)
  end

  # Both keepers run, one owning the table and the other its heir.
  defp wait_redundant(c) do
    wait_until(fn ->
      keepers = [keeper(c.primary), keeper(c.secondary)]

      case Table.info(c.table) do
        :undefined ->
          false

        info ->
          Enum.all?(keepers, &(is_pid(&1) and Process.alive?(&1))) and
            info[:owner] != info[:heir] and
            Enum.sort([info[:owner], info[:heir]]) == Enum.sort(keepers)
      end
    end)
  end

  defp wait_until(fun, tries \\ 500) do
    cond do
      fun.() ->
        :ok

      tries > 0 ->
        Process.sleep(5)
        wait_until(fun, tries - 1)

      true ->
        flunk("condition not reached")
    end
  end
end
