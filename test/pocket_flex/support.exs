defmodule PocketFlex.TestSupport do
  @moduledoc false
  # Helpers shared by the PocketFlex tests (loaded with Code.require_file).

  @doc false
  def with_backend(backend, fun) do
    old = Application.fetch_env(:pocket_flex, :state_storage)
    Application.put_env(:pocket_flex, :state_storage, backend)

    try do
      fun.()
    after
      restore(old)
    end
  end

  @doc false
  def restore({:ok, value}), do: Application.put_env(:pocket_flex, :state_storage, value)
  def restore(:error), do: Application.delete_env(:pocket_flex, :state_storage)

  @doc false
  def wait_until(fun, timeout \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline)
  end

  defp do_wait(fun, deadline) do
    cond do
      value = fun.() ->
        value

      System.monotonic_time(:millisecond) > deadline ->
        raise "condition not met in time"

      true ->
        Process.sleep(5)
        do_wait(fun, deadline)
    end
  end
end

defmodule PocketFlex.TestSupport.AgentStorage do
  @moduledoc false
  # A custom backend, as a user would write one: an Agent holding a map of states.
  @behaviour PocketFlex.StateStorage

  def start_link(_ \\ []), do: Agent.start_link(fn -> %{} end, name: __MODULE__)

  def child_spec(arg), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [arg]}}

  @impl true
  def get_state(flow_id), do: Agent.get(__MODULE__, &Map.get(&1, flow_id, %{}))

  @impl true
  def update_state(flow_id, new_state) do
    Agent.update(__MODULE__, &Map.put(&1, flow_id, new_state))
    new_state
  end

  @impl true
  def merge_state(flow_id, updates) do
    Agent.get_and_update(__MODULE__, fn states ->
      merged = Map.merge(Map.get(states, flow_id, %{}), updates)
      {merged, Map.put(states, flow_id, merged)}
    end)
  end

  @impl true
  def cleanup(flow_id) do
    Agent.update(__MODULE__, &Map.delete(&1, flow_id))
    :ok
  end
end
