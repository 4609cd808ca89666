-- Pandoc filter for the report's PDF (typst), doing what Quarto does for that format.
--
-- Conditional content: a Div of class content-visible (or content-hidden) with
-- when-format / unless-format is kept (unwrapped) or dropped for the format "typst", as
-- Quarto's content-hidden.lua does. The report's warning and note boxes use it: a Quarto
-- callout in typst imports the @preview/fontawesome package, which typst downloads, so
-- their typst form is a plain coloured block instead (analysis/report_helpers.box).

local function formats(value)
  local list = {}
  for name in string.gmatch(value or "", "[^%s,]+") do
    list[name] = true
  end
  return list
end

local function matches(value)
  return formats(value)["typst"] == true
end

function Div(div)
  local visible = div.classes:includes("content-visible")
  local hidden = div.classes:includes("content-hidden")
  if not (visible or hidden) then
    return nil
  end
  local show = true
  local when, unless = div.attributes["when-format"], div.attributes["unless-format"]
  if when ~= nil then
    show = show and matches(when)
  end
  if unless ~= nil then
    show = show and not matches(unless)
  end
  if hidden then
    show = not show
  end
  if show then
    return div.content
  end
  return {}
end

-- Tables: typst's automatic column widths. The pipe tables' relative widths (from the
-- dash counts) squeeze short columns until their headers overlap the next column.
function Table(t)
  for i, spec in ipairs(t.colspecs) do
    t.colspecs[i] = { spec[1], pandoc.ColWidthDefault }
  end
  return t
end
