defmodule PocketFlex.DocTest do
  # Not async: the facade's doctests use the configured (default) backend.
  use ExUnit.Case, async: false

  doctest PocketFlex.StateStorage
  doctest PocketFlex.StateStorage.Native
  doctest PocketFlex.StateStorage.ETS
  doctest PocketFlex.Node
  doctest PocketFlex.BatchNode
  doctest PocketFlex.Flow
  doctest PocketFlex.AsyncBatchFlow
end
