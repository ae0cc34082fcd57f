defmodule Malla.RegistryTest do
  use ExUnit.Case, async: true

  alias Malla.Registry, as: R

  defmodule Worker do
    use GenServer
    def start_link(arg, opts \\ []), do: GenServer.start_link(__MODULE__, arg, opts)
    @impl true
    def init(arg), do: {:ok, arg}
    @impl true
    def handle_call(:get, _from, state), do: {:reply, state, state}
    @impl true
    def handle_cast({:set, v}, _state), do: {:noreply, v}
  end

  setup do
    {:ok, key: {:reg_test, make_ref()}}
  end

  defp spawn_idle(fun) do
    parent = self()

    pid =
      spawn(fn ->
        send(parent, {:done, self(), fun.()})
        receive do: (:stop -> :ok)
      end)

    assert_receive {:done, ^pid, result}
    {pid, result}
  end

  defp kill(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, _, _, _}
  end

  defp eventually(fun, tries \\ 200) do
    if fun.() or tries == 0,
      do: assert(fun.()),
      else: Process.sleep(2) && eventually(fun, tries - 1)
  end

  describe "via/1 with GenServer" do
    test "names a GenServer", %{key: k} do
      assert R.via(k) == {:via, R.registry(), {Malla.ProcRegistry, k}}
      {:ok, pid} = Worker.start_link(:s0, name: R.via(k))
      assert R.whereis(k) == pid
      assert GenServer.call(R.via(k), :get) == :s0
      GenServer.cast(R.via(k), {:set, :s1})
      assert GenServer.call(R.via(k), :get) == :s1
      assert GenServer.whereis(R.via(k)) == pid
    end

    test "a second start with the name fails", %{key: k} do
      {:ok, pid} = Worker.start_link(:a, name: R.via(k))
      assert Worker.start_link(:b, name: R.via(k)) == {:error, {:already_started, pid}}
    end

    test "the name is freed when the process dies", %{key: k} do
      {:ok, pid} = GenServer.start(Worker, :a, name: R.via(k))
      GenServer.stop(pid)
      eventually(fn -> R.whereis(k) == nil end)
      {:ok, pid2} = Worker.start_link(:b, name: R.via(k))
      assert R.whereis(k) == pid2
    end

    test "call to an unregistered name exits", %{key: k} do
      assert catch_exit(GenServer.call(R.via(k), :get))
    end
  end

  describe "register/1,2, whereis/1, lookup/1, unregister/1" do
    test "register and find", %{key: k} do
      assert {:ok, _} = R.register(k, :meta)
      assert R.whereis(k) == self()
      assert R.lookup(k) == {self(), :meta}
    end

    test "register/1 stores nil", %{key: k} do
      assert {:ok, _} = R.register(k)
      assert R.lookup(k) == {self(), nil}
    end

    test "already registered", %{key: k} do
      {other, _} = spawn_idle(fn -> R.register(k, 1) end)
      assert R.register(k, 2) == {:error, {:already_registered, other}}
      assert R.register(k) == {:error, {:already_registered, other}}
    end

    test "not found", %{key: k} do
      assert R.whereis(k) == nil
      assert R.lookup(k) == nil
    end

    test "unregister", %{key: k} do
      {:ok, _} = R.register(k)
      assert R.unregister(k) == :ok
      assert R.whereis(k) == nil
      assert R.unregister(k) == :ok
      assert {:ok, _} = R.register(k)
    end

    test "unregister by another process does nothing", %{key: k} do
      {:ok, _} = R.register(k)
      spawn_idle(fn -> R.unregister(k) end)
      assert R.whereis(k) == self()
    end

    test "the entry vanishes when the process dies", %{key: k} do
      {pid, {:ok, _}} = spawn_idle(fn -> R.register(k, :v) end)
      assert R.lookup(k) == {pid, :v}
      kill(pid)
      eventually(fn -> R.lookup(k) == nil end)
    end
  end

  describe "store/1,2, unstore/1, values/1,2,3, count/1,2,3" do
    test "several processes and the same process many times", %{key: k} do
      assert {:ok, _} = R.store(k, %{worker_id: 1})
      assert {:ok, _} = R.store(k, %{worker_id: 2})
      {other, {:ok, _}} = spawn_idle(fn -> R.store(k, %{worker_id: 3}) end)
      me = self()

      assert Enum.sort(R.values(k)) ==
               Enum.sort([{me, %{worker_id: 1}}, {me, %{worker_id: 2}}, {other, %{worker_id: 3}}])

      assert R.count(k) == 3
    end

    test "store/1 stores nil", %{key: k} do
      {:ok, _} = R.store(k)
      assert R.values(k) == [{self(), nil}]
    end

    test "values and count with a pattern and guards", %{key: k} do
      for i <- 1..5, do: R.store(k, {:w, i})
      assert Enum.sort(R.values(k, {:w, :_})) == Enum.map(1..5, &{self(), {:w, &1}})

      assert R.values(k, {:w, :"$1"}, [{:>=, :"$1", 4}]) |> Enum.sort() ==
               [{self(), {:w, 4}}, {self(), {:w, 5}}]

      assert R.values(k, {:x, :_}) == []
      assert R.count(k) == 5
      assert R.count(k, {:w, 2}) == 1
      assert R.count(k, {:w, :"$1"}, [{:<, :"$1", 3}]) == 2
    end

    test "unstore removes only the caller's values", %{key: k} do
      R.store(k, 1)
      R.store(k, 2)
      {other, _} = spawn_idle(fn -> R.store(k, 3) end)
      assert R.unstore(k) == :ok
      assert R.values(k) == [{other, 3}]
      assert R.unstore(k) == :ok
    end

    test "values vanish when the process dies", %{key: k} do
      {pid, _} = spawn_idle(fn -> R.store(k, 1) && R.store(k, 2) end)
      assert R.count(k) == 2
      kill(pid)
      eventually(fn -> R.values(k) == [] end)
    end

    test "the unique and duplicate registries are separate", %{key: k} do
      R.store(k, :stored)
      assert R.whereis(k) == nil
      {:ok, _} = R.register(k, :reg)
      assert R.values(k) == [{self(), :stored}]
    end

    test "empty key", %{key: k} do
      assert R.values(k) == []
      assert R.count(k) == 0
      assert R.values(k, :_) == []
    end
  end

  test "many concurrent stores", %{key: k} do
    1..500
    |> Enum.map(fn i -> Task.async(fn -> R.store(k, i) end) end)
    |> Enum.each(&Task.await/1)

    # The tasks have exited: their entries go away.
    eventually(fn -> R.count(k) == 0 end)
  end
end
