defmodule PocketFlex.StateStorage do
  @moduledoc """
  Shared flow state, kept outside the processes that run a flow.

  This module is both the behaviour a storage backend implements and the
  facade that every caller uses. Each flow execution has a `flow_id` (see
  `generate_flow_id/1`); its state is a map.

      iex> flow_id = PocketFlex.StateStorage.generate_flow_id("doc")
      iex> PocketFlex.StateStorage.get_state(flow_id)
      %{}
      iex> PocketFlex.StateStorage.update_state(flow_id, %{"key" => "value"})
      %{"key" => "value"}
      iex> PocketFlex.StateStorage.merge_state(flow_id, %{"other" => 1})
      %{"key" => "value", "other" => 1}
      iex> PocketFlex.StateStorage.get_state(flow_id)
      %{"key" => "value", "other" => 1}
      iex> PocketFlex.StateStorage.cleanup(flow_id)
      :ok
      iex> PocketFlex.StateStorage.get_state(flow_id)
      %{}

  ## Semantics

  The same as upstream PocketFlex (`norbu09/pocket_flex`):

    * `get_state/1` of an unknown flow is `%{}`;
    * `update_state/2` replaces the state and returns it;
    * `merge_state/2` merges shallowly (`Map.merge/2`) into the current state
      (or `%{}`) and returns the result;
    * `cleanup/1` removes the state and returns `:ok`, also for unknown flows.

  One deliberate difference: a state or an update that is not a map raises
  `ArgumentError` here, while upstream silently stores it (and then fails
  later, e.g. in `Map.merge/2`).

      iex> PocketFlex.StateStorage.update_state("doc_flow", [:not, :a, :map])
      ** (ArgumentError) expected the state of flow "doc_flow" to be a map, got: [:not, :a, :map]

  ## Backends

  The backend is read from the application environment at every call,
  so it can be changed at run time:

      config :pocket_flex, :state_storage, MyApp.CustomStateStorage

  The default is `PocketFlex.StateStorage.Native`: a NativeStore table whose
  `merge_state/2` is atomic in the engine (concurrent merges never lose a
  key) and that survives the crash of a single PocketFlex process.
  `PocketFlex.StateStorage.ETS` is the upstream-compatible ETS backend
  (writes serialised through one GenServer).

  A backend implements the four callbacks:

      defmodule MyApp.CustomStateStorage do
        @behaviour PocketFlex.StateStorage

        @impl true
        def get_state(flow_id), do: ...
        @impl true
        def update_state(flow_id, new_state), do: ...
        @impl true
        def merge_state(flow_id, state_updates), do: ...
        @impl true
        def cleanup(flow_id), do: ...
      end

  The facade checks that states and updates are maps before it calls the
  backend, so custom backends may assume maps.
  """

  @typedoc "The identifier of one flow execution; `generate_flow_id/1` makes unique ones."
  @type flow_id :: term()
  @typedoc "The state of a flow."
  @type state :: map()

  @doc "Returns the state of `flow_id`, or `%{}` when there is none."
  @callback get_state(flow_id()) :: state()
  @doc "Replaces the state of `flow_id` with `new_state` and returns it."
  @callback update_state(flow_id(), state()) :: state()
  @doc "Shallowly merges `state_updates` into the state of `flow_id` (or `%{}`) and returns the result."
  @callback merge_state(flow_id(), state()) :: state()
  @doc "Removes the state of `flow_id`; `:ok` also when there is none."
  @callback cleanup(flow_id()) :: :ok

  @default PocketFlex.StateStorage.Native

  @doc """
  The configured backend module: `config :pocket_flex, :state_storage, Module`,
  read at every call; `PocketFlex.StateStorage.Native` when unset.

      iex> PocketFlex.StateStorage.backend()
      PocketFlex.StateStorage.Native
  """
  @spec backend() :: module()
  def backend, do: Application.get_env(:pocket_flex, :state_storage, @default)

  @doc """
  Returns the state of `flow_id`, or `%{}` when there is none.

      iex> PocketFlex.StateStorage.get_state("doc_never_used")
      %{}
  """
  @spec get_state(flow_id()) :: state()
  def get_state(flow_id), do: backend().get_state(flow_id)

  @doc """
  Replaces the state of `flow_id` with `new_state` and returns it. Raises
  `ArgumentError` when `new_state` is not a map (upstream stores anything).

      iex> PocketFlex.StateStorage.update_state("doc_update", %{a: 1})
      %{a: 1}
      iex> PocketFlex.StateStorage.cleanup("doc_update")
      :ok
  """
  @spec update_state(flow_id(), state()) :: state()
  def update_state(flow_id, new_state) do
    check_map!(flow_id, new_state, "state")
    backend().update_state(flow_id, new_state)
  end

  @doc """
  Shallowly merges `state_updates` into the state of `flow_id` (`%{}` when
  there is none) and returns the merged state. Raises `ArgumentError` when
  `state_updates` is not a map (upstream stores anything).

      iex> PocketFlex.StateStorage.merge_state("doc_merge", %{a: 1, b: %{x: 1}})
      %{a: 1, b: %{x: 1}}
      iex> PocketFlex.StateStorage.merge_state("doc_merge", %{b: %{y: 2}})
      %{a: 1, b: %{y: 2}}
      iex> PocketFlex.StateStorage.cleanup("doc_merge")
      :ok
  """
  @spec merge_state(flow_id(), state()) :: state()
  def merge_state(flow_id, state_updates) do
    check_map!(flow_id, state_updates, "state update")
    backend().merge_state(flow_id, state_updates)
  end

  @doc """
  Removes the state of `flow_id`. Returns `:ok`, also for unknown flows.

      iex> PocketFlex.StateStorage.cleanup("doc_unknown")
      :ok
  """
  @spec cleanup(flow_id()) :: :ok
  def cleanup(flow_id), do: backend().cleanup(flow_id)

  @doc """
  A new unique flow id, `"\#{prefix}_\#{:erlang.unique_integer([:positive])}"`.

      iex> "my_flow_" <> n = PocketFlex.StateStorage.generate_flow_id("my_flow")
      iex> String.to_integer(n) > 0
      true
      iex> PocketFlex.StateStorage.generate_flow_id() == PocketFlex.StateStorage.generate_flow_id()
      false
  """
  @spec generate_flow_id(String.t()) :: String.t()
  def generate_flow_id(prefix \\ "flow") when is_binary(prefix) do
    "#{prefix}_#{:erlang.unique_integer([:positive])}"
  end

  @doc false
  # Shared by the backends: raises ArgumentError unless `value` is a map.
  @spec check_map!(flow_id(), term(), String.t()) :: :ok
  def check_map!(_flow_id, value, _what) when is_map(value), do: :ok

  def check_map!(flow_id, value, what) do
    raise ArgumentError,
          "expected the #{what} of flow #{inspect(flow_id)} to be a map, got: #{inspect(value)}"
  end
end
