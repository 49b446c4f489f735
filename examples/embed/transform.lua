-- The per-record transform examples/embed.rs maps over its records: prices a record in euros
-- with the host's `rate` function and puts it in a band.
local bands = { { below = 10, name = "small" }, { below = 100, name = "medium" } }

function transform(record)
  local eur = record.amount * rate(record.currency)
  local band = "large"
  for _, b in ipairs(bands) do
    if eur < b.below then band = b.name break end
  end
  return { id = record.id, eur = eur, band = band }
end
