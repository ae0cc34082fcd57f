defmodule NativeStore.TableMonitorTest do
  # Regression: every give_away/3 and setopts/2 used to add one more NIF
  # monitor on the same process, so ping-pong hand-overs grew memory and the
  # number of `down` callbacks without bound.
  use ExUnit.Case, async: true

  alias NativeStore.Table

  defp monitors_on(pid) do
    {:monitored_by, list} = Process.info(pid, :monitored_by)
    length(list)
  end

  test "give_away ping-pong and repeated setopts monitor each process once" do
    me = self()
    t = Table.new(:monitor_pingpong, [:public])

    peer =
      spawn_link(fn ->
        loop = fn loop ->
          receive do
            {:"ETS-TRANSFER", tab, _from, :ping} ->
              Table.give_away(tab, me, :pong)
              loop.(loop)

            :stop ->
              :ok
          end
        end

        loop.(loop)
      end)

    ping_pong = fn n ->
      for _ <- 1..n do
        Table.give_away(t, peer, :ping)
        assert_receive {:"ETS-TRANSFER", ^t, ^peer, :pong}, 5_000
        Table.setopts(t, {:heir, peer, :h})
      end
    end

    ping_pong.(5)
    after_few = {monitors_on(me), monitors_on(peer)}
    ping_pong.(500)
    assert Table.info(t, :owner) == me
    # Bounded: the same number of monitors after 5 and after 505 rounds.
    assert {monitors_on(me), monitors_on(peer)} == after_few
    send(peer, :stop)
    Table.delete(t)
  end
end
