package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
)

// line is one series of a chart.
type line struct {
	name  string
	color string
	dash  string // SVG stroke-dasharray, "" for solid
	width float64
	xs    []float64
	ys    []float64
}

type tick struct {
	v     float64
	label string
}

// chart is a line chart rendered as inline SVG.
type chart struct {
	title  string
	xLabel string
	yLabel string
	logY   bool
	area   bool // fill under the first series of each color
	xTicks []tick
	yFmt   func(float64) string
	lines  []line
	// yInclude are values the y axis covers whatever the lines hold: panels
	// side by side share one scale this way (see shareY).
	yInclude []float64
}

// shareY gives charts shown side by side for comparison one y scale: each
// covers the lowest and highest value of all of them.
func shareY(cs []chart) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, c := range cs {
		for _, l := range c.lines {
			for _, y := range l.ys {
				if c.logY && y <= 0 {
					continue
				}
				lo, hi = math.Min(lo, y), math.Max(hi, y)
			}
		}
	}
	if math.IsInf(lo, 0) {
		return
	}
	for i := range cs {
		cs[i].yInclude = []float64{lo, hi}
	}
}

const (
	chartW  = 560.0
	chartH  = 300.0
	padL    = 72.0
	padR    = 36.0
	padT    = 34.0
	padB    = 76.0
	plotW   = chartW - padL - padR
	plotH   = chartH - padT - padB
	fontCSS = `font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"`
)

// niceTicks returns round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	top := math.Ceil(hi/step-1e-9) * step
	for v := math.Floor(lo/step) * step; v <= top+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

func (c chart) svg() template.HTML {
	var xmin, xmax = math.Inf(1), math.Inf(-1)
	var ymin, ymax = math.Inf(1), math.Inf(-1)
	for _, l := range c.lines {
		for i := range l.xs {
			y := l.ys[i]
			if c.logY && y <= 0 {
				continue
			}
			xmin, xmax = math.Min(xmin, l.xs[i]), math.Max(xmax, l.xs[i])
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	if !math.IsInf(xmin, 0) {
		for _, y := range c.yInclude {
			if !c.logY || y > 0 {
				ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" class="chart" role="img" aria-label="%s">`, chartW, chartH, html.EscapeString(c.title))
	fmt.Fprintf(&b, `<text x="%.0f" y="20" %s font-size="14" font-weight="600" fill="#1f2937">%s</text>`, padL, fontCSS, html.EscapeString(c.title))
	if math.IsInf(xmin, 0) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" %s font-size="13" fill="#6b7280" text-anchor="middle">no data</text></svg>`, chartW/2, chartH/2, fontCSS)
		return template.HTML(b.String())
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	// y range
	var yTicks []tick
	var ty func(float64) float64
	yf := c.yFmt
	if yf == nil {
		yf = func(v float64) string { return num(v) }
	}
	if c.logY {
		lo := math.Floor(math.Log10(ymin))
		hi := math.Ceil(math.Log10(ymax))
		if hi == lo {
			hi = lo + 1
		}
		ty = func(v float64) float64 {
			if v <= 0 {
				v = math.Pow(10, lo)
			}
			return padT + plotH - (math.Log10(v)-lo)/(hi-lo)*plotH
		}
		for e := lo; e <= hi; e++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, e)
				if math.Log10(v) > hi+1e-9 {
					break
				}
				lbl := ""
				if m == 1 || hi-lo <= 2 {
					lbl = yf(v)
				}
				yTicks = append(yTicks, tick{v, lbl})
			}
		}
	} else {
		if ymin > 0 {
			ymin = 0
		}
		ts := niceTicks(ymin, ymax, 5)
		ymin, ymax = ts[0], ts[len(ts)-1]
		if ymax == ymin {
			ymax = ymin + 1
		}
		ty = func(v float64) float64 { return padT + plotH - (v-ymin)/(ymax-ymin)*plotH }
		for _, v := range ts {
			yTicks = append(yTicks, tick{v, yf(v)})
		}
	}
	tx := func(v float64) float64 { return padL + (v-xmin)/(xmax-xmin)*plotW }
	// grid and y labels
	for _, t := range yTicks {
		y := ty(t.v)
		stroke := "#eef0f3"
		if t.label != "" {
			stroke = "#e2e5ea"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, padL, y, padL+plotW, y, stroke)
		if t.label != "" {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" %s font-size="11" fill="#6b7280" text-anchor="end">%s</text>`, padL-6, y+4, fontCSS, html.EscapeString(t.label))
		}
	}
	// x ticks
	xt := c.xTicks
	if xt == nil {
		for _, v := range niceTicks(xmin, xmax, 6) {
			if v >= xmin-1e-9 && v <= xmax+1e-9 {
				xt = append(xt, tick{v, num(v)})
			}
		}
	}
	for _, t := range xt {
		x := tx(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eef0f3"/>`, x, padT, x, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" %s font-size="11" fill="#6b7280" text-anchor="middle">%s</text>`, x, padT+plotH+16, fontCSS, html.EscapeString(t.label))
	}
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#d1d5db"/>`, padL, padT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" %s font-size="11" fill="#374151" text-anchor="middle">%s</text>`, padL+plotW/2, padT+plotH+34, fontCSS, html.EscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text transform="translate(12 %.1f) rotate(-90)" %s font-size="11" fill="#374151" text-anchor="middle">%s</text>`, padT+plotH/2, fontCSS, html.EscapeString(c.yLabel))
	// series
	seen := map[string]bool{}
	for _, l := range c.lines {
		var pts strings.Builder
		n := 0
		for i := range l.xs {
			if c.logY && l.ys[i] <= 0 {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", tx(l.xs[i]), ty(l.ys[i]))
			n++
		}
		if n == 0 {
			continue
		}
		w := l.width
		if w == 0 {
			w = 2
		}
		if c.area && !seen[l.color] && !c.logY {
			fmt.Fprintf(&b, `<polygon points="%.1f,%.1f %s%.1f,%.1f" fill="%s" fill-opacity="0.12" stroke="none"/>`,
				tx(l.xs[0]), ty(ymin), pts.String(), tx(l.xs[len(l.xs)-1]), ty(ymin), l.color)
		}
		seen[l.color] = true
		dash := ""
		if l.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, l.dash)
		}
		if n == 1 {
			fmt.Fprintf(&b, `<circle cx="%s" r="3" fill="%s"/>`, strings.Replace(strings.TrimSpace(pts.String()), ",", `" cy="`, 1), l.color)
			continue
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round"%s/>`, strings.TrimSpace(pts.String()), l.color, w, dash)
	}
	// legend, wrapping to a second row when it runs out of width
	lx := padL
	ly := chartH - 22
	for _, l := range c.lines {
		w := 30 + 6.2*float64(len([]rune(l.name)))
		if lx+w > chartW-padR && lx > padL {
			lx = padL
			ly += 14
		}
		dash := ""
		if l.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, l.dash)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.5"%s/>`, lx, ly-4, lx+18, ly-4, l.color, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" %s font-size="11" fill="#374151">%s</text>`, lx+22, ly, fontCSS, html.EscapeString(l.name))
		lx += w
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
