defmodule PocketFlex.BatchNode do
  @moduledoc """
  A node whose work is a list of items.

  `prep/1` returns the list of items; `exec_item/1` is called for each one
  and `exec/1` returns the list of their results, in order, for `post/3`.
  In a `PocketFlex.Flow` the items run one after another; in a
  `PocketFlex.AsyncBatchFlow` they run concurrently.

  `use PocketFlex.BatchNode` gives the defaults of `use PocketFlex.Node` and
  an `exec/1` that maps `exec_item/1` over the items (`nil` counts as no
  items).

      iex> defmodule DocSquares do
      ...>   use PocketFlex.BatchNode
      ...>   def prep(shared), do: Map.get(shared, "items", [])
      ...>   def exec_item(n), do: n * n
      ...>   def post(shared, _items, squares), do: {:default, Map.put(shared, "squares", squares)}
      ...> end
      iex> PocketFlex.Node.run(DocSquares, %{"items" => [1, 2, 3]})
      {:default, %{"items" => [1, 2, 3], "squares" => [1, 4, 9]}}
      iex> PocketFlex.BatchNode.batch_node?(DocSquares)
      true
  """

  @doc "Processes one item of the list that `prep/1` returned."
  @callback exec_item(item :: term()) :: term()

  @doc false
  defmacro __using__(_opts) do
    quote do
      use PocketFlex.Node
      @behaviour PocketFlex.BatchNode

      def exec(items), do: Enum.map(List.wrap(items), &exec_item/1)

      defoverridable exec: 1
    end
  end

  @doc """
  True when `module` is a batch node (it exports `exec_item/1`).

      iex> PocketFlex.BatchNode.batch_node?(Enum)
      false
  """
  @spec batch_node?(module()) :: boolean()
  def batch_node?(module) when is_atom(module) do
    Code.ensure_loaded?(module) and function_exported?(module, :exec_item, 1)
  end
end
