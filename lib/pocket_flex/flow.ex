defmodule PocketFlex.Flow do
  @moduledoc """
  A graph of `PocketFlex.Node`s, run from a start node.

  Build a flow with `new/0`, `add_node/2`, `connect/4` and `start/2`, then
  `run/2` it on an initial shared state. After each node, the action its
  `post/3` returned picks the next node through the connections; when no
  connection matches, the flow ends with the current state.

      iex> defmodule DocUpcase do
      ...>   use PocketFlex.Node
      ...>   def prep(shared), do: shared["text"]
      ...>   def exec(text), do: String.upcase(text)
      ...>   def post(shared, _prep, up), do: {:default, Map.put(shared, "text", up)}
      ...> end
      iex> defmodule DocExclaim do
      ...>   use PocketFlex.Node
      ...>   def post(shared, _prep, _exec), do: {nil, Map.update!(shared, "text", &(&1 <> "!"))}
      ...> end
      iex> flow =
      ...>   PocketFlex.Flow.new()
      ...>   |> PocketFlex.Flow.add_node(DocUpcase)
      ...>   |> PocketFlex.Flow.add_node(DocExclaim)
      ...>   |> PocketFlex.Flow.connect(DocUpcase, DocExclaim)
      ...>   |> PocketFlex.Flow.start(DocUpcase)
      iex> PocketFlex.Flow.run(flow, %{"text" => "hi"})
      {:ok, %{"text" => "HI!"}}

  A node that raises (or whose `post/3` returns something other than
  `{action, map}`) stops the flow with `{:error, {node, exception}}`.
  """

  alias PocketFlex.Node

  defstruct nodes: [], connections: %{}, start_node: nil

  @typedoc "A flow: its nodes, `%{{from, action} => to}` connections, and the start node."
  @type t :: %__MODULE__{
          nodes: [module()],
          connections: %{{module(), atom()} => module()},
          start_node: module() | nil
        }

  @doc """
  An empty flow.

      iex> PocketFlex.Flow.new()
      %PocketFlex.Flow{nodes: [], connections: %{}, start_node: nil}
  """
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc """
  Adds the node module `node`. Raises `ArgumentError` when it is not a
  loaded module with `prep/1`, `exec/1` and `post/3`.

      iex> PocketFlex.Flow.new() |> PocketFlex.Flow.add_node(String)
      ** (ArgumentError) expected a PocketFlex.Node module (with prep/1, exec/1 and post/3), got: String
  """
  @spec add_node(t(), module()) :: t()
  def add_node(%__MODULE__{nodes: nodes} = flow, node) when is_atom(node) do
    check_node!(node)
    if node in nodes, do: flow, else: %{flow | nodes: nodes ++ [node]}
  end

  @doc """
  Connects `from` to `to` for `action` (default `:default`): when `from`'s
  `post/3` returns `action`, `to` runs next. Both nodes must have been added.

      iex> PocketFlex.Flow.new() |> PocketFlex.Flow.connect(A, B)
      ** (ArgumentError) expected nodes added with add_node/2, got: A -> B
  """
  @spec connect(t(), module(), module(), atom()) :: t()
  def connect(%__MODULE__{} = flow, from, to, action \\ :default)
      when is_atom(from) and is_atom(to) and is_atom(action) do
    unless from in flow.nodes and to in flow.nodes do
      raise ArgumentError,
            "expected nodes added with add_node/2, got: #{inspect(from)} -> #{inspect(to)}"
    end

    %{flow | connections: Map.put(flow.connections, {from, action || :default}, to)}
  end

  @doc """
  Sets the start node, which must have been added.

      iex> PocketFlex.Flow.new() |> PocketFlex.Flow.start(A)
      ** (ArgumentError) expected a node added with add_node/2, got: A
  """
  @spec start(t(), module()) :: t()
  def start(%__MODULE__{} = flow, node) when is_atom(node) do
    unless node in flow.nodes do
      raise ArgumentError, "expected a node added with add_node/2, got: #{inspect(node)}"
    end

    %{flow | start_node: node}
  end

  @doc """
  The node that follows `node` for `action` (`nil` is `:default`), or `nil`.

      iex> PocketFlex.Flow.next_node(PocketFlex.Flow.new(), A, :default)
      nil
  """
  @spec next_node(t(), module(), atom()) :: module() | nil
  def next_node(%__MODULE__{connections: c}, node, action),
    do: Map.get(c, {node, action || :default})

  @doc """
  Runs the flow on `shared` (a map) from its start node, in the calling
  process. Returns `{:ok, final_state}`, or `{:error, reason}`:
  `:no_start_node`, or `{node, exception}` when a node fails.

      iex> PocketFlex.Flow.run(PocketFlex.Flow.new(), %{})
      {:error, :no_start_node}
  """
  @spec run(t(), map()) :: {:ok, map()} | {:error, term()}
  def run(%__MODULE__{start_node: nil}, shared) when is_map(shared), do: {:error, :no_start_node}

  def run(%__MODULE__{start_node: start} = flow, shared) when is_map(shared),
    do: loop(flow, start, shared)

  def run(%__MODULE__{}, shared),
    do: raise(ArgumentError, "expected the shared state to be a map, got: #{inspect(shared)}")

  defp loop(flow, node, shared) do
    case step(node, shared) do
      {:ok, action, shared} ->
        case next_node(flow, node, action) do
          nil -> {:ok, shared}
          next -> loop(flow, next, shared)
        end

      {:error, _} = error ->
        error
    end
  end

  defp step(node, shared) do
    {action, shared} = Node.run(node, shared)
    {:ok, action, shared}
  rescue
    e -> {:error, {node, e}}
  catch
    kind, reason -> {:error, {node, {kind, reason}}}
  end

  defp check_node!(node) do
    ok =
      Code.ensure_loaded?(node) and function_exported?(node, :prep, 1) and
        function_exported?(node, :exec, 1) and function_exported?(node, :post, 3)

    unless ok do
      raise ArgumentError,
            "expected a PocketFlex.Node module (with prep/1, exec/1 and post/3), got: #{inspect(node)}"
    end
  end
end
