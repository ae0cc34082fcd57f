defmodule NativeStore.TableDocTest do
  use ExUnit.Case, async: true
  doctest NativeStore.Table
end
