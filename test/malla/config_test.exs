defmodule Malla.ConfigTest do
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  alias Malla.Config

  setup do
    domain = {:config_test, make_ref()}
    {:ok, d: domain}
  end

  describe "get/2,3, put/3, del/2" do
    test "get of a missing key", %{d: d} do
      assert Config.get(d, :k) == nil
      assert Config.get(d, :k, :dflt) == :dflt
    end

    test "put then get, any terms", %{d: d} do
      for {k, v} <- [{:a, 1}, {"b", %{x: [1, 2]}}, {{1, 2}, self()}, {1.0, <<0::8000>>}] do
        assert Config.put(d, k, v) == :ok
        assert Config.get(d, k) == v
      end

      assert Config.get(d, 1) == nil
    end

    test "domains are separate", %{d: d} do
      Config.put(d, :k, 1)
      Config.put({d, 2}, :k, 2)
      assert Config.get(d, :k) == 1
      assert Config.get({d, 2}, :k) == 2
    end

    test "put replaces, nil is a value", %{d: d} do
      Config.put(d, :k, 1)
      Config.put(d, :k, nil)
      assert Config.get(d, :k, :dflt) == nil
    end

    test "del", %{d: d} do
      Config.put(d, :k, 1)
      assert Config.del(d, :k) == :ok
      assert Config.get(d, :k, :gone) == :gone
      assert Config.del(d, :k) == :ok
    end
  end

  describe "increment/2,3" do
    test "starts from 0", %{d: d} do
      assert Config.increment(d, :n) == 1
      assert Config.increment(d, :n) == 2
      assert Config.increment(d, :n, 10) == 12
      assert Config.increment(d, :n, -20) == -8
      assert Config.get(d, :n) == -8
    end

    test "continues from a stored integer", %{d: d} do
      Config.put(d, :n, 41)
      assert Config.increment(d, :n) == 42
    end

    test "raises ArgumentError when no integer is stored", %{d: d} do
      Config.put(d, :n, "one")
      assert_raise ArgumentError, fn -> Config.increment(d, :n) end
      Config.put(d, :n, 1.5)
      assert_raise ArgumentError, fn -> Config.increment(d, :n) end
      assert_raise ArgumentError, fn -> Config.increment(d, :m, :x) end
    end
  end

  describe "update/3" do
    test "gets nil when absent", %{d: d} do
      assert Config.update(d, :k, fn nil -> :first end) == :ok
      assert Config.get(d, :k) == :first
    end

    test "gets the current value", %{d: d} do
      Config.put(d, :k, %{a: 1})
      assert Config.update(d, :k, &Map.put(&1, :b, 2)) == :ok
      assert Config.get(d, :k) == %{a: 1, b: 2}
    end

    test "an exception in fun leaves the value", %{d: d} do
      Config.put(d, :k, 1)
      assert_raise RuntimeError, fn -> Config.update(d, :k, fn _ -> raise "no" end) end
      assert Config.get(d, :k) == 1
    end

    test "rejects a non-function", %{d: d} do
      assert_raise ArgumentError, fn -> Config.update(d, :k, :nope) end
    end
  end

  describe "add/3" do
    test "prepends when absent", %{d: d} do
      assert Config.add(d, :l, 1) == :ok
      assert Config.add(d, :l, 2) == :ok
      assert Config.add(d, :l, 1) == :ok
      assert Config.get(d, :l) == [2, 1]
    end

    test "to a stored list", %{d: d} do
      Config.put(d, :l, [:a])
      assert Config.add(d, :l, :b) == :ok
      assert Config.get(d, :l) == [:b, :a]
    end

    test "invalid value", %{d: d} do
      Config.put(d, :l, %{})
      assert Config.add(d, :l, :b) == {:error, :invalid_value}
      assert Config.get(d, :l) == %{}
    end
  end

  describe "concurrency: 1,000 concurrent callers lose nothing" do
    test "increment", %{d: d} do
      run(1000, fn i -> Config.increment(d, :n, i) end)
      assert Config.get(d, :n) == Enum.sum(1..1000)
    end

    test "update", %{d: d} do
      run(1000, fn _ ->
        Config.update(d, :n, fn
          nil -> 1
          n -> n + 1
        end)
      end)

      assert Config.get(d, :n) == 1000
    end

    test "update building a map", %{d: d} do
      run(1000, fn i -> Config.update(d, :m, fn m -> Map.put(m || %{}, i, true) end) end)
      assert map_size(Config.get(d, :m)) == 1000
    end

    test "add", %{d: d} do
      run(1000, fn i -> Config.add(d, :l, i) end)
      assert Enum.sort(Config.get(d, :l)) == Enum.to_list(1..1000)
    end

    test "add of the same values", %{d: d} do
      run(1000, fn i -> Config.add(d, :l, rem(i, 10)) end)
      assert Enum.sort(Config.get(d, :l)) == Enum.to_list(0..9)
    end

    test "mixed updates and increments on different keys", %{d: d} do
      run(1000, fn i ->
        Config.increment(d, :c)
        Config.update(d, :u, fn v -> (v || 0) + 1 end)
        Config.add(d, :a, i)
      end)

      assert Config.get(d, :c) == 1000
      assert Config.get(d, :u) == 1000
      assert length(Config.get(d, :a)) == 1000
    end
  end

  describe "survival" do
    test "survives a kill of its owner process", %{d: d} do
      ensure_redundant()
      Config.put(d, :k, :kept)
      owner = info(:owner)
      heir = info(:heir)
      assert owner in [Process.whereis(Malla.Config.Owner), Process.whereis(Malla.Config.Heir)]
      kill(owner)
      wait_until(fn -> info(:owner) == heir end)
      assert Config.get(d, :k) == :kept
      # The killed keeper is restarted and finds the table in place.
      wait_until(fn -> keepers_alive?() end)
      Config.put(d, :k2, 2)
      assert Config.increment(d, :n) == 1
      assert Config.get(d, :k) == :kept
      assert Config.get(d, :k2) == 2
    end

    test "survives a kill of the heir keeper", %{d: d} do
      ensure_redundant()
      Config.put(d, :k, :kept)
      owner = info(:owner)
      kill(info(:heir))
      wait_until(fn -> keepers_alive?() end)
      assert info(:owner) == owner
      assert Config.get(d, :k) == :kept
    end

    test "survives 10 alternating kills of the owner and of the heir keeper", %{d: d} do
      ensure_redundant()
      for i <- 1..100, do: Config.put(d, {:k, i}, i)

      for round <- 1..10 do
        {role, victim} =
          if rem(round, 2) == 1, do: {:owner, info(:owner)}, else: {:heir, info(:heir)}

        survivor = if role == :owner, do: info(:heir), else: info(:owner)
        kill(victim)
        # Wait for the restart: the killed keeper is back and heir again.
        ensure_redundant()
        refute victim in [info(:owner), info(:heir)]
        # Killing the owner hands the table to the heir; killing the heir
        # leaves it with its owner.
        assert info(:owner) == survivor

        for i <- 1..100, do: assert(Config.get(d, {:k, i}) == i)
        assert Config.increment(d, :rounds) == round
      end
    end

    test "the data is lost only with both keepers; the table is then recreated empty",
         %{d: d} do
      ensure_redundant()
      Config.put(d, :k, :kept)

      [heir_name] =
        for n <- [Malla.Config.Owner, Malla.Config.Heir], info(:heir) == Process.whereis(n), do: n

      capture_log(fn ->
        # Stop the heir for good, then kill the owner: nobody inherits the
        # table, which is deleted (as in ETS).
        :ok = Supervisor.terminate_child(Malla.Supervisor, heir_name)
        kill(info(:owner))
        {:ok, _} = Supervisor.restart_child(Malla.Supervisor, heir_name)
        ensure_redundant()
      end)

      assert Config.get(d, :k) == nil
      assert Config.put(d, :k, :new) == :ok
      assert Config.get(d, :k) == :new
    end

    test "survives service restarts", %{d: d} do
      defmodule CfgSvc do
        use Malla.Service
      end

      {:ok, pid} = CfgSvc.start_link()
      Config.put(d, :k, :kept)
      Malla.Service.put(CfgSvc, :k, :lost)
      Process.unlink(pid)
      Process.exit(pid, :kill)
      {:ok, _} = wait_start(CfgSvc)
      assert Malla.Service.get(CfgSvc, :k) == nil
      assert Config.get(d, :k) == :kept
      CfgSvc.stop()
    end

    test "writes from a process that then dies are kept", %{d: d} do
      Task.async(fn -> Config.put(d, :k, :from_task) end) |> Task.await()
      assert Config.get(d, :k) == :from_task
    end
  end

  defp info(item), do: NativeStore.Table.info(Config.table(), item)

  defp keepers_alive? do
    is_pid(Process.whereis(Malla.Config.Owner)) and is_pid(Process.whereis(Malla.Config.Heir))
  end

  defp kill(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
  end

  # Waits until both keepers run, one owning the table and the other its
  # heir (after a restart, the owner names the restarted keeper heir).
  defp ensure_redundant do
    wait_until(fn ->
      keepers = Enum.map([Malla.Config.Owner, Malla.Config.Heir], &Process.whereis/1)
      owner = info(:owner)
      heir = info(:heir)

      Enum.all?(keepers, &alive?/1) and alive?(owner) and alive?(heir) and owner != heir and
        Enum.sort([owner, heir]) == Enum.sort(keepers)
    end)
  end

  defp alive?(pid), do: is_pid(pid) and Process.alive?(pid)

  defp wait_start(mod, tries \\ 100) do
    case mod.start_link() do
      {:ok, pid} ->
        {:ok, pid}

      {:error, _} when tries > 0 ->
        Process.sleep(2)
        wait_start(mod, tries - 1)
    end
  end

  defp run(n, fun) do
    1..n
    |> Enum.map(fn i -> Task.async(fn -> fun.(i) end) end)
    |> Enum.each(&Task.await(&1, 30_000))
  end

  defp wait_until(fun, tries \\ 400) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("timed out")
      true -> Process.sleep(5) && wait_until(fun, tries - 1)
    end
  end
end
