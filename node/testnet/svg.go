package testnet

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// Plots are plain SVG written by hand: no plotting library, readable in a
// browser, and small enough to commit.

const (
	svgW, svgH                     = 720, 400
	padL, padR, padT, padB float64 = 70, 24, 56, 70
)

func svgOpen(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="26" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n", svgW/2, html.EscapeString(title))
}

func svgEmpty(title, msg string) string {
	var b strings.Builder
	svgOpen(&b, title)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#666">%s</text></svg>`+"\n", svgW/2, svgH/2, html.EscapeString(msg))
	return b.String()
}

// niceStep returns a round tick step for a range.
func niceStep(span float64, ticks int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(ticks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

// axes draws the frame, grid and tick labels, and returns the mapping
// from data to pixels.
func axes(b *strings.Builder, xmax, ymax float64, xlabel, ylabel string) (func(float64) float64, func(float64) float64) {
	pw, ph := float64(svgW)-padL-padR, float64(svgH)-padT-padB
	xs := niceStep(xmax, 8)
	ys := niceStep(ymax, 5)
	xmax = math.Ceil(xmax/xs) * xs
	ymax = math.Ceil(ymax/ys) * ys
	X := func(v float64) float64 { return padL + v/xmax*pw }
	Y := func(v float64) float64 { return padT + ph - v/ymax*ph }
	for v := 0.0; v <= ymax+ys/2; v += ys {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", padL, Y(v), padL+pw, Y(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#333">%s</text>`+"\n", padL-6, Y(v)+4, fmtTick(v))
	}
	for v := 0.0; v <= xmax+xs/2; v += xs {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", X(v), padT+ph, X(v), padT+ph+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", X(v), padT+ph+20, fmtTick(v))
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", padL, padT, pw, ph)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", padL+pw/2, padT+ph+40, html.EscapeString(xlabel))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="start" fill="#333">%s</text>`+"\n", padL, padT-10, html.EscapeString(ylabel))
	return X, Y
}

// histogramSVG plots the distribution of xs with p50, p90 and p99 marked.
func histogramSVG(title, xlabel string, xs []float64) string {
	if len(xs) == 0 {
		return svgEmpty(title, "no samples in this run")
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	// Clip the axis at p99.5 so one straggler does not flatten the rest;
	// the tail goes into the last bin and is labelled.
	hi := percentile(s, 99.5)
	if hi <= 0 {
		hi = s[len(s)-1]
	}
	if hi <= 0 {
		hi = 1
	}
	bins := 40
	step := niceStep(hi, bins)
	bins = int(math.Ceil(hi/step)) + 1
	counts := make([]int, bins)
	over := 0
	for _, v := range s {
		i := int(v / step)
		if i >= bins {
			i = bins - 1
			over++
		}
		counts[max(i, 0)]++
	}
	cmax := 0
	for _, c := range counts {
		cmax = max(cmax, c)
	}
	var b strings.Builder
	svgOpen(&b, title)
	X, Y := axes(&b, float64(bins)*step, float64(cmax)*1.1, xlabel, "count")
	for i, c := range counts {
		if c == 0 {
			continue
		}
		x0, x1 := X(float64(i)*step), X(float64(i+1)*step)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7fc1"/>`+"\n", x0+0.5, Y(float64(c)), math.Max(x1-x0-1, 1), Y(0)-Y(float64(c)))
	}
	for _, p := range []struct {
		q     float64
		color string
	}{{50, "#2a9d3a"}, {90, "#e09b00"}, {99, "#c62828"}} {
		v := percentile(s, p.q)
		x := X(math.Min(v, float64(bins)*step))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5,3"/>`+"\n", x, padT, x, Y(0), p.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s" font-weight="bold">p%.0f %s</text>`+"\n", x+4, padT+16+float64(int(p.q)%7)*2.2, p.color, p.q, fmtTick(math.Round(v*10)/10))
	}
	note := fmt.Sprintf("n=%d, mean %s, max %s", len(s), fmtTick(math.Round(mean(s)*10)/10), fmtTick(math.Round(s[len(s)-1]*10)/10))
	if over > 0 {
		note += fmt.Sprintf("; %d above the axis are in the last bar", over)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="end" fill="#555" font-size="12">%s</text>`+"\n", float64(svgW)-padR, svgH-8, html.EscapeString(note))
	b.WriteString("</svg>\n")
	return b.String()
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// deliverySVG plots, over time since the first publish, how many
// follower-updates have arrived (cumulative) against how many are due.
func deliverySVG(rep *Report) string {
	title := "Feed delivery over time"
	if len(rep.deliveries) == 0 {
		return svgEmpty(title, "no feed updates in this run")
	}
	pts := append([]deliveryPoint(nil), rep.deliveries...)
	sort.Slice(pts, func(i, j int) bool { return pts[i].at < pts[j].at })
	expected := 0
	for _, f := range rep.Feeds {
		expected += f.Expected
	}
	tmax := pts[len(pts)-1].at
	if tmax <= 0 {
		tmax = 1
	}
	var b strings.Builder
	svgOpen(&b, title)
	ymax := float64(max(expected, len(pts)))
	X, Y := axes(&b, tmax*1.02, ymax*1.05, "seconds since the first publish", "follower-updates delivered (cumulative)")
	if expected > 0 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c62828" stroke-dasharray="6,4"/>`+"\n", X(0), Y(float64(expected)), X(tmax*1.02), Y(float64(expected)))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c62828">expected %d</text>`+"\n", X(0)+6, Y(float64(expected))-6, expected)
	}
	var path strings.Builder
	fmt.Fprintf(&path, "M%.1f,%.1f", X(0), Y(0))
	// At most ~1500 vertices keep the file small.
	stride := max(1, len(pts)/1500)
	for i := 0; i < len(pts); i += stride {
		fmt.Fprintf(&path, " L%.1f,%.1f", X(pts[i].at), Y(float64(i+1)))
	}
	fmt.Fprintf(&path, " L%.1f,%.1f", X(pts[len(pts)-1].at), Y(float64(len(pts))))
	fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="#4a7fc1" stroke-width="2"/>`+"\n", path.String())
	var seen, delivered int
	for _, f := range rep.Feeds {
		seen += f.OnTopic
		delivered += f.Delivered
	}
	ratio := 0.0
	if expected > 0 {
		ratio = 100 * float64(delivered) / float64(expected)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="end" fill="#555" font-size="12">%s</text>`+"\n", float64(svgW)-padR, svgH-8,
		html.EscapeString(fmt.Sprintf("%d seen on the topic; %d/%d delivered (%.1f%%)", seen, delivered, expected, ratio)))
	b.WriteString("</svg>\n")
	return b.String()
}
