defmodule NativeStore.RegistryDocTest do
  use ExUnit.Case, async: true
  doctest NativeStore.Registry
end
