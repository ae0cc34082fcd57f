defmodule Malla.SeedTest do
  # The examples of the seed document ("Storage and State Management"),
  # each as a test.
  use ExUnit.Case, async: false

  defmodule MyService do
    use Malla.Service
  end

  defmodule MyUniqueWorker do
    use GenServer
    @impl true
    def init(arg), do: {:ok, arg}
  end

  defmodule MyWorker do
    use GenServer
    def start_link(id), do: GenServer.start_link(__MODULE__, id)

    @impl true
    def init(id) do
      Malla.Registry.store(:my_worker_pool, %{worker_id: id})
      {:ok, %{id: id}}
    end
  end

  test "Service storage: put, get, del" do
    {:ok, _} = MyService.start_link()
    # Store data for a specific service
    assert Malla.Service.put(MyService, :my_key, "some_value") == :ok
    # Retrieve the data
    value = Malla.Service.get(MyService, :my_key, "default")
    assert value == "some_value"
    # Delete the data
    assert Malla.Service.del(MyService, :my_key) == :ok
    assert Malla.Service.get(MyService, :my_key, "default") == "default"
    MyService.stop()
  end

  test "Service storage is ephemeral: destroyed when the service stops" do
    {:ok, _} = MyService.start_link()
    Malla.Service.put(MyService, :my_key, "some_value")
    :ok = MyService.stop()
    {:ok, _} = MyService.start_link()
    assert Malla.Service.get(MyService, :my_key, "default") == "default"
    MyService.stop()
  end

  test "Unique process registration with via/1" do
    # Register a GenServer with a unique name
    {:ok, worker} =
      GenServer.start_link(MyUniqueWorker, [], name: Malla.Registry.via("my_unique_worker"))

    # Look up the process later
    pid = Malla.Registry.whereis("my_unique_worker")
    assert pid == worker

    # Another process with the same name
    assert GenServer.start_link(MyUniqueWorker, [], name: Malla.Registry.via("my_unique_worker")) ==
             {:error, {:already_started, pid}}

    assert Malla.Registry.register("my_unique_worker") == {:error, {:already_registered, pid}}
  end

  test "Duplicate registration: a pool of workers" do
    {:ok, w1} = MyWorker.start_link(1)
    {:ok, w2} = MyWorker.start_link(2)
    # Find all registered workers
    workers = Malla.Registry.values(:my_worker_pool)
    assert Enum.sort(workers) == Enum.sort([{w1, %{worker_id: 1}}, {w2, %{worker_id: 2}}])
  end

  test "Global configuration store" do
    # Store a global setting
    assert Malla.Config.put(:my_app, :api_key, "secret_key") == :ok
    # Retrieve the setting from anywhere on the same node
    key = Task.async(fn -> Malla.Config.get(:my_app, :api_key) end) |> Task.await()
    assert key == "secret_key"
  end

  test "Config survives service restarts" do
    {:ok, pid} = MyService.start_link()
    Malla.Config.put(:my_app, :setting, 1)
    Malla.Service.put(MyService, :setting, 1)
    :ok = MyService.stop()
    refute Process.alive?(pid)
    {:ok, _} = MyService.start_link()
    assert Malla.Config.get(:my_app, :setting) == 1
    assert Malla.Service.get(MyService, :setting) == nil
    MyService.stop()
  end
end
