package chaos

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"strings"
	"time"
)

// Timeline geometry. Three text lines on top (legend, fault labels, time
// ticks), then one row per client and one for the VIP when sampled.
const (
	TimelineWidth = 1200
	tlLeft        = 40
	tlRight       = 10
	tlLine        = 12           // text line height: 5-pixel glyphs at scale 2, plus spacing
	tlTop         = 3*tlLine + 8 // and a line for outages under the fault labels
	tlRow         = 14
	tlBottom      = 8
	glyphScale    = 2
	glyphAdvance  = 4 * glyphScale
)

var (
	colOK      = color.RGBA{40, 170, 60, 255}
	colFailed  = color.RGBA{220, 40, 40, 255}
	colUnknown = color.RGBA{240, 150, 0, 255}
	colText    = color.RGBA{20, 20, 20, 255}
	colGrid    = color.RGBA{225, 225, 225, 255}
	colVIP0    = color.RGBA{160, 160, 160, 255}
	colVIP1    = color.RGBA{0, 140, 150, 255}
	colVIP2    = color.RGBA{210, 0, 210, 255}
	faultPal   = []color.RGBA{{90, 120, 255, 255}, {255, 190, 0, 255}, {170, 80, 255, 255}, {0, 190, 190, 255}, {255, 90, 160, 255}, {120, 120, 120, 255}}
)

func (r *Report) timelineRows() int {
	rows := r.Clients
	if len(r.VIP) > 0 {
		rows++
	}
	return rows
}

// Timeline draws the run: x is time; each client's row has a bar per
// request from invocation to completion, green for success, red for
// failed, orange for unknown outcome; faults are shaded bands labelled
// with their kind, the measured outages black lines under the labels; the
// VIP row shows the number of holders (grey none, teal one, magenta two or
// more).
func (r *Report) Timeline() *image.RGBA {
	rows := r.timelineRows()
	img := image.NewRGBA(image.Rect(0, 0, TimelineWidth, tlTop+rows*tlRow+tlBottom))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255}, 1)

	t0, t1 := r.Start, r.End
	for _, f := range r.Faults {
		t0, t1 = earlier(t0, f.Start), later(t1, f.End)
	}
	for _, s := range r.VIP {
		t0, t1 = earlier(t0, s.At), later(t1, s.At)
	}
	if !t1.After(t0) {
		t1 = t0.Add(time.Second)
	}
	plotW := TimelineWidth - tlLeft - tlRight
	x := func(t time.Time) int {
		return tlLeft + int(float64(plotW)*float64(t.Sub(t0))/float64(t1.Sub(t0)))
	}
	rowY := func(i int) int { return tlTop + i*tlRow }
	bottom := rowY(rows)

	// Legend.
	lx := tlLeft
	for _, l := range []struct {
		c    color.RGBA
		text string
	}{{colOK, "ok"}, {colFailed, "failed"}, {colUnknown, "unknown"}, {colVIP2, "two vip holders"}} {
		fill(img, image.Rect(lx, 2, lx+10, 12), l.c, 1)
		lx = drawText(img, lx+14, 2, l.text, colText) + 12
	}

	// Time ticks.
	step := tickStep(t1.Sub(t0))
	for d := time.Duration(0); d <= t1.Sub(t0); d += step {
		tx := x(t0.Add(d))
		fill(img, image.Rect(tx, tlTop-2, tx+1, bottom), colGrid, 1)
		label := fmt.Sprintf("%gs", d.Seconds())
		if tx+2+len(label)*glyphAdvance <= TimelineWidth {
			drawText(img, tx+2, 2*tlLine+6, label, colText)
		}
	}

	// Rows.
	for c := 0; c < r.Clients; c++ {
		drawText(img, 2, rowY(c)+2, fmt.Sprintf("c%d", c), colText)
		fill(img, image.Rect(tlLeft, rowY(c)+tlRow-1, TimelineWidth-tlRight, rowY(c)+tlRow), colGrid, 1)
	}
	for _, op := range r.Ops {
		c := colOK
		switch op.Outcome {
		case Failed:
			c = colFailed
		case Unknown:
			c = colUnknown
		}
		x0 := x(op.Invoke)
		fill(img, image.Rect(x0, rowY(op.Client)+2, max(x(op.Complete), x0+1), rowY(op.Client)+tlRow-3), c, 1)
	}
	if len(r.VIP) > 0 {
		vr := rows - 1
		drawText(img, 2, rowY(vr)+2, "vip", colText)
		for i, s := range r.VIP {
			x0 := x(s.At)
			x1 := x0 + 2
			if i+1 < len(r.VIP) {
				x1 = max(x(r.VIP[i+1].At), x0+1)
			}
			c := colVIP1
			switch {
			case len(s.Holders) == 0:
				c = colVIP0
			case len(s.Holders) >= 2:
				c = colVIP2
			}
			fill(img, image.Rect(x0, rowY(vr)+2, x1, rowY(vr)+tlRow-3), c, 1)
		}
	}

	// Faults over everything, translucent, with their outages.
	kinds := map[string]int{}
	for i, o := range r.Outages {
		k, ok := kinds[o.Fault.Kind]
		if !ok {
			k = len(kinds)
			kinds[o.Fault.Kind] = k
		}
		c := faultPal[k%len(faultPal)]
		x0 := x(o.Fault.Start)
		x1 := max(x(o.Fault.End), x0+2)
		fill(img, image.Rect(x0, tlLine, x1, bottom), c, 0.3)
		fill(img, image.Rect(x0, tlLine, x0+1, bottom), c, 1)
		if o.Gaps > 0 {
			fill(img, image.Rect(x(o.From), 2*tlLine+1, max(x(o.To), x(o.From)+1), 2*tlLine+3), colText, 1)
		}
		// The kind where it fits before the next fault's band, else the
		// number (the report's fault table names it).
		nextX := TimelineWidth
		if i+1 < len(r.Outages) {
			nextX = x(r.Outages[i+1].Fault.Start)
		}
		for _, label := range []string{fmt.Sprintf("%d %s", i+1, o.Fault.Kind), fmt.Sprint(i + 1)} {
			if x0+2+len(label)*glyphAdvance < nextX {
				drawText(img, x0+2, 2+tlLine, label, colText)
				break
			}
		}
	}
	return img
}

// tickStep picks a round tick interval giving at most 12 ticks.
func tickStep(span time.Duration) time.Duration {
	for _, s := range []int{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600} {
		if span/(time.Duration(s)*time.Second) <= 12 {
			return time.Duration(s) * time.Second
		}
	}
	return span / 12
}

func earlier(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fill paints rect with c at opacity alpha (0..1) over what is there.
func fill(img *image.RGBA, rect image.Rectangle, c color.RGBA, alpha float64) {
	rect = rect.Intersect(img.Bounds())
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			i := img.PixOffset(x, y)
			p := img.Pix[i : i+4 : i+4]
			p[0] = uint8(float64(p[0])*(1-alpha) + float64(c.R)*alpha)
			p[1] = uint8(float64(p[1])*(1-alpha) + float64(c.G)*alpha)
			p[2] = uint8(float64(p[2])*(1-alpha) + float64(c.B)*alpha)
			p[3] = 255 // the image is opaque
		}
	}
}

// glyphs is a 3x5 bitmap font: five rows, top first, three bits each
// (4 = left column). Lowercase is drawn as uppercase; anything missing is
// drawn as '?'.
var glyphs = map[rune][5]uint8{
	'A': {2, 5, 7, 5, 5}, 'B': {6, 5, 6, 5, 6}, 'C': {3, 4, 4, 4, 3}, 'D': {6, 5, 5, 5, 6},
	'E': {7, 4, 6, 4, 7}, 'F': {7, 4, 6, 4, 4}, 'G': {3, 4, 5, 5, 3}, 'H': {5, 5, 7, 5, 5},
	'I': {7, 2, 2, 2, 7}, 'J': {1, 1, 1, 5, 2}, 'K': {5, 5, 6, 5, 5}, 'L': {4, 4, 4, 4, 7},
	'M': {5, 7, 7, 5, 5}, 'N': {6, 5, 5, 5, 5}, 'O': {2, 5, 5, 5, 2}, 'P': {6, 5, 6, 4, 4},
	'Q': {2, 5, 5, 6, 3}, 'R': {6, 5, 6, 5, 5}, 'S': {3, 4, 2, 1, 6}, 'T': {7, 2, 2, 2, 2},
	'U': {5, 5, 5, 5, 7}, 'V': {5, 5, 5, 5, 2}, 'W': {5, 5, 7, 7, 5}, 'X': {5, 5, 2, 5, 5},
	'Y': {5, 5, 2, 2, 2}, 'Z': {7, 1, 2, 4, 7},
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {6, 1, 2, 4, 7}, '3': {6, 1, 2, 1, 6},
	'4': {5, 5, 7, 1, 1}, '5': {7, 4, 6, 1, 6}, '6': {3, 4, 7, 5, 7}, '7': {7, 1, 2, 2, 2},
	'8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 6},
	' ': {}, '-': {0, 0, 7, 0, 0}, '.': {0, 0, 0, 0, 2}, ':': {0, 2, 0, 2, 0}, '/': {1, 1, 2, 4, 4},
	'_': {0, 0, 0, 0, 7}, '(': {1, 2, 2, 2, 1}, ')': {4, 2, 2, 2, 4}, '+': {0, 2, 7, 2, 0},
	'=': {0, 7, 0, 7, 0}, '%': {5, 1, 2, 4, 5}, '?': {6, 1, 2, 0, 2},
}

// drawText draws s with its top left at (x, y) and returns the x after it.
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) int {
	for _, ch := range strings.ToUpper(s) {
		g, ok := glyphs[ch]
		if !ok {
			g = glyphs['?']
		}
		for row, bits := range g {
			for col := 0; col < 3; col++ {
				if bits&(4>>col) != 0 {
					px, py := x+col*glyphScale, y+row*glyphScale
					fill(img, image.Rect(px, py, px+glyphScale, py+glyphScale), c, 1)
				}
			}
		}
		x += glyphAdvance
	}
	return x
}

// WritePNG encodes Timeline as PNG.
func (r *Report) WritePNG(w io.Writer) error {
	return png.Encode(w, r.Timeline())
}

// WritePNGFile writes Timeline to path.
func (r *Report) WritePNGFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WritePNG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
