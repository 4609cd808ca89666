-- Pandoc filter for the report's PDF (typst).
--
-- Quarto's callout divs (::: {.callout-warning}, ::: {.callout-note}) become coloured
-- blocks, so a warning in the PDF is as visible as in the web page.
local colours = {
  ["callout-warning"] = { fill = "#fff3cd", stroke = "#e0a800" },
  ["callout-note"] = { fill = "#e7f1ff", stroke = "#6ea8fe" },
}

function Div(div)
  for _, class in ipairs(div.classes) do
    local c = colours[class]
    if c then
      local open = string.format(
        '#block(width: 100%%, fill: rgb("%s"), stroke: 0.8pt + rgb("%s"), inset: 8pt, '
          .. 'radius: 4pt, breakable: true)[',
        c.fill, c.stroke)
      local blocks = { pandoc.RawBlock("typst", open) }
      for _, b in ipairs(div.content) do
        table.insert(blocks, b)
      end
      table.insert(blocks, pandoc.RawBlock("typst", "]"))
      return blocks
    end
  end
end

-- Tables: typst's automatic column widths. The pipe tables' relative widths (from the
-- dash counts) squeeze short columns until their headers overlap the next column.
function Table(t)
  for i, spec in ipairs(t.colspecs) do
    t.colspecs[i] = { spec[1], pandoc.ColWidthDefault }
  end
  return t
end
