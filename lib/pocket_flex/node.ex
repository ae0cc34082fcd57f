defmodule PocketFlex.Node do
  @moduledoc """
  A step of a `PocketFlex.Flow`.

  A node is a module with three callbacks, run in this order:

    1. `prep(shared)` reads what it needs from the shared state;
    2. `exec(prep_result)` does the work (it does not see the state);
    3. `post(shared, prep_result, exec_result)` returns
       `{action, new_shared}`: the new shared state and the action that
       picks the next node (`nil` means `:default`).

  `use PocketFlex.Node` defines defaults for all three (`prep` returns
  `nil`, `exec` returns its argument, `post` returns `{:default, shared}`),
  each of which can be overridden.

      iex> defmodule DocGreet do
      ...>   use PocketFlex.Node
      ...>   def prep(shared), do: Map.fetch!(shared, "name")
      ...>   def exec(name), do: "Hello, " <> name
      ...>   def post(shared, _prep, greeting), do: {:default, Map.put(shared, "greeting", greeting)}
      ...> end
      iex> PocketFlex.Node.run(DocGreet, %{"name" => "Ada"})
      {:default, %{"greeting" => "Hello, Ada", "name" => "Ada"}}
  """

  @typedoc "An action returned by `post/3`; `nil` means `:default`."
  @type action :: atom() | nil

  @doc "Reads from the shared state what `exec/1` needs."
  @callback prep(shared :: map()) :: term()
  @doc "Does the node's work on what `prep/1` returned."
  @callback exec(prep_result :: term()) :: term()
  @doc "Returns the action that picks the next node and the new shared state."
  @callback post(shared :: map(), prep_result :: term(), exec_result :: term()) ::
              {action(), map()}

  @doc false
  defmacro __using__(_opts) do
    quote do
      @behaviour PocketFlex.Node

      def prep(_shared), do: nil

      def exec(prep_result), do: prep_result

      def post(shared, _prep_result, _exec_result), do: {:default, shared}

      defoverridable prep: 1, exec: 1, post: 3
    end
  end

  @doc """
  Runs `node` once on `shared`: `prep`, `exec`, `post`. Returns
  `{action, new_shared}` with a `nil` action turned into `:default`.
  Raises what the node raises, and `ArgumentError` when `post/3` does not
  return `{action, map}`.

      iex> defmodule DocNoop do
      ...>   use PocketFlex.Node
      ...> end
      iex> PocketFlex.Node.run(DocNoop, %{a: 1})
      {:default, %{a: 1}}
  """
  @spec run(module(), map()) :: {atom(), map()}
  def run(node, shared) when is_atom(node) and is_map(shared) do
    prep_result = node.prep(shared)
    exec_result = node.exec(prep_result)
    node |> check_post(node.post(shared, prep_result, exec_result)) |> normalize()
  end

  @doc false
  # Checks a post/3 result: {action, map}, action an atom or nil.
  @spec check_post(module(), term()) :: {action(), map()}
  def check_post(_node, {action, shared} = result) when is_atom(action) and is_map(shared),
    do: result

  def check_post(node, other) do
    raise ArgumentError,
          "expected #{inspect(node)}.post/3 to return {action, shared_map}, got: #{inspect(other)}"
  end

  defp normalize({nil, shared}), do: {:default, shared}
  defp normalize(result), do: result
end
