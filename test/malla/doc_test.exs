defmodule Malla.DocTest do
  use ExUnit.Case, async: false

  doctest Malla.Service
  doctest Malla.Config
  doctest Malla.Registry
end
