defmodule Malla.ServiceTest do
  use ExUnit.Case, async: false

  alias Malla.Service

  defmodule Svc do
    use Malla.Service, color: :blue, size: 1
  end

  defmodule Svc2 do
    use Malla.Service
  end

  defmodule Plain do
    # Not a `use Malla.Service` module: Malla.Service.start_link/2 works too.
  end

  setup do
    on_exit(fn ->
      for s <- [Svc, Svc2, Plain], do: Service.stop(s)
    end)
  end

  describe "start_link/0,1 and stop/0" do
    test "registers the process under the module name" do
      assert {:ok, pid} = Svc.start_link()
      assert Process.whereis(Svc) == pid
      assert Service.whereis(Svc) == pid
      assert NativeStore.Table.info(Svc, :owner) == pid
      assert Svc.stop() == :ok
      refute Process.alive?(pid)
      assert Service.whereis(Svc) == nil
    end

    test "a second start returns already_started" do
      {:ok, pid} = Svc.start_link()
      assert Svc.start_link() == {:error, {:already_started, pid}}
      assert Service.start_link(Svc) == {:error, {:already_started, pid}}
    end

    test "options merge over the use options" do
      {:ok, _} = Svc.start_link(size: 2, extra: true)
      config = Service.config(Svc)
      assert config[:color] == :blue
      assert config[:size] == 2
      assert config[:extra] == true
    end

    test "stop of a service that is not running" do
      assert Svc.stop() == {:error, :not_running}
      assert Service.stop(Svc2) == {:error, :not_running}
    end

    test "config of a service that is not running raises" do
      assert_raise ArgumentError, ~r/not running/, fn -> Service.config(Svc) end
    end

    test "Malla.Service.start_link/2 and stop/1 work with any module" do
      assert {:ok, pid} = Service.start_link(Plain, a: 1)
      assert Service.config(Plain) == [a: 1]
      assert Service.put(Plain, :k, 1) == :ok
      assert Service.get(Plain, :k) == 1
      assert Service.stop(Plain) == :ok
      refute Process.alive?(pid)
    end

    test "the start is linked to the caller" do
      Process.flag(:trap_exit, true)
      {:ok, pid} = Svc.start_link()
      Process.exit(pid, :boom)
      assert_receive {:EXIT, ^pid, :boom}
    end

    test "child_spec/1 is transient" do
      spec = Svc.child_spec(size: 3)
      assert spec.id == Svc
      assert spec.restart == :transient
      assert spec.start == {Svc, :start_link, [[size: 3]]}
    end
  end

  describe "storage" do
    setup do
      {:ok, _} = Svc.start_link()
      :ok
    end

    test "get/2,3" do
      assert Service.get(Svc, :missing) == nil
      assert Service.get(Svc, :missing, :dflt) == :dflt
      Service.put(Svc, {:any, "key"}, %{v: 1})
      assert Service.get(Svc, {:any, "key"}, :dflt) == %{v: 1}
    end

    test "put/3 replaces" do
      assert Service.put(Svc, :k, 1) == :ok
      assert Service.put(Svc, :k, 2) == :ok
      assert Service.get(Svc, :k) == 2
    end

    test "put/3 of nil is stored" do
      assert Service.put(Svc, :k, nil) == :ok
      assert Service.get(Svc, :k, :dflt) == nil
      refute Service.put_new(Svc, :k, 1)
    end

    test "put_new/3" do
      assert Service.put_new(Svc, :k, 1) == true
      assert Service.put_new(Svc, :k, 2) == false
      assert Service.get(Svc, :k) == 1
    end

    test "del/2" do
      Service.put(Svc, :k, 1)
      assert Service.del(Svc, :k) == :ok
      assert Service.get(Svc, :k) == nil
      assert Service.del(Svc, :k) == :ok
    end

    test "keys are matched as in ETS sets" do
      Service.put(Svc, 1, :int)
      Service.put(Svc, 1.0, :float)
      assert Service.get(Svc, 1) == :int
      assert Service.get(Svc, 1.0) == :float
    end

    test "each service has its own storage" do
      {:ok, _} = Svc2.start_link()
      Service.put(Svc, :k, :one)
      Service.put(Svc2, :k, :two)
      assert Service.get(Svc, :k) == :one
      assert Service.get(Svc2, :k) == :two
    end

    test "any process can read and write" do
      Task.async(fn -> Service.put(Svc, :from_task, self()) end) |> Task.await()
      assert is_pid(Service.get(Svc, :from_task))
    end

    test "concurrent put_new: exactly one wins" do
      results =
        1..200
        |> Enum.map(fn i -> Task.async(fn -> Service.put_new(Svc, :race, i) end) end)
        |> Enum.map(&Task.await/1)

      assert Enum.count(results, & &1) == 1
    end
  end

  describe "not running" do
    test "every storage function raises ArgumentError" do
      for fun <- [
            fn -> Service.get(Svc, :k) end,
            fn -> Service.get(Svc, :k, 1) end,
            fn -> Service.put(Svc, :k, 1) end,
            fn -> Service.put_new(Svc, :k, 1) end,
            fn -> Service.del(Svc, :k) end
          ] do
        assert_raise ArgumentError, "service Malla.ServiceTest.Svc is not running", fun
      end
    end

    test "after stop, the storage is gone" do
      {:ok, _} = Svc.start_link()
      Service.put(Svc, :k, 1)
      :ok = Svc.stop()
      assert NativeStore.Table.whereis(Svc) == :undefined
      assert_raise ArgumentError, fn -> Service.get(Svc, :k) end
    end

    test "a non-atom service raises ArgumentError" do
      assert_raise ArgumentError, fn -> Service.get("svc", :k) end
      assert_raise ArgumentError, fn -> Service.put(self(), :k, 1) end
    end
  end

  describe "lifecycle" do
    test "a crashed service loses its storage" do
      Process.flag(:trap_exit, true)
      {:ok, pid} = Svc.start_link()
      Service.put(Svc, :k, 1)
      Process.exit(pid, :kill)
      assert_receive {:EXIT, ^pid, :killed}
      assert_raise ArgumentError, fn -> Service.get(Svc, :k) end
      assert NativeStore.Table.whereis(Svc) == :undefined
    end

    test "restarted under a supervisor after a crash, it starts empty" do
      {:ok, sup} = Supervisor.start_link([Svc], strategy: :one_for_one)
      pid = Process.whereis(Svc)
      Service.put(Svc, :k, 1)
      ref = Process.monitor(pid)
      Process.exit(pid, :kill)
      assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
      new_pid = wait_running(Svc)
      assert new_pid != pid
      assert Service.get(Svc, :k) == nil
      Service.put(Svc, :k, 2)
      assert Service.get(Svc, :k) == 2
      Supervisor.stop(sup)
    end

    test "a service crashing in a loop is restarted each time" do
      {:ok, sup} = Supervisor.start_link([Svc], strategy: :one_for_one, max_restarts: 100)

      for i <- 1..20 do
        pid = wait_running(Svc)
        assert Service.get(Svc, :k) == nil
        Service.put(Svc, :k, i)
        ref = Process.monitor(pid)
        Process.exit(pid, :kill)
        assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
      end

      wait_running(Svc)
      assert Service.get(Svc, :k) == nil
      Supervisor.stop(sup)
    end

    test "transient: a stopped service is not restarted" do
      {:ok, sup} = Supervisor.start_link([{Svc, size: 9}], strategy: :one_for_one)
      assert Service.config(Svc)[:size] == 9
      assert Svc.stop() == :ok
      Process.sleep(20)
      assert Process.whereis(Svc) == nil
      assert [{Svc, :undefined, :worker, _}] = Supervisor.which_children(sup)
      Supervisor.stop(sup)
    end

    test "the storage goes with the supervisor" do
      {:ok, sup} = Supervisor.start_link([Svc], strategy: :one_for_one)
      Service.put(Svc, :k, 1)
      Supervisor.stop(sup)
      assert_raise ArgumentError, fn -> Service.get(Svc, :k) end
    end
  end

  # The restarted service's pid once its storage is there: a GenServer
  # registers its name before `init/1` (which creates the storage) runs, and
  # the dead one's storage goes when the VM reports its exit to the NIF.
  defp wait_running(svc) do
    wait_for(fn ->
      pid = Process.whereis(svc)
      if pid != nil and NativeStore.Table.info(svc, :owner) == pid, do: pid
    end)
  end

  defp wait_for(fun, tries \\ 200) do
    case fun.() do
      nil when tries > 0 ->
        Process.sleep(5)
        wait_for(fun, tries - 1)

      nil ->
        flunk("timed out")

      value ->
        value
    end
  end
end
