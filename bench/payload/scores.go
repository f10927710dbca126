package payload

import "strconv"

// A second realistic JSON feed: live football scores, as a sports-data
// provider pushes them to a scoreboard page. Each message is one match's
// update of 1-2 KB: the competition, the teams with their scores, the
// minute, the event that caused the update with a line of commentary, the
// running statistics, the last few events and the live odds. Names,
// minutes, statistics and commentary come from a generator seeded by the
// sequence number, so no two messages are the same; the text is drawn
// from fixed phrases with names put in, as real commentary feeds are.

var competitions = [...]struct{ id, name, country string }{
	{"eng.1", "Premier League", "England"}, {"esp.1", "LaLiga", "Spain"},
	{"ger.1", "Bundesliga", "Germany"}, {"ita.1", "Serie A", "Italy"},
	{"fra.1", "Ligue 1", "France"}, {"uefa.champions", "UEFA Champions League", "Europe"},
}

var teams = [...]struct {
	id, name, short, venue string
	players                [6]string
}{
	{"t-ars", "Arsenal", "ARS", "Emirates Stadium, London", [6]string{"Bukayo Saka", "Martin Ødegaard", "Declan Rice", "Gabriel Magalhães", "Kai Havertz", "William Saliba"}},
	{"t-liv", "Liverpool", "LIV", "Anfield, Liverpool", [6]string{"Mohamed Salah", "Virgil van Dijk", "Alexis Mac Allister", "Luis Díaz", "Dominik Szoboszlai", "Cody Gakpo"}},
	{"t-mci", "Manchester City", "MCI", "Etihad Stadium, Manchester", [6]string{"Erling Haaland", "Phil Foden", "Rodri", "Bernardo Silva", "Rúben Dias", "Jérémy Doku"}},
	{"t-rma", "Real Madrid", "RMA", "Estadio Santiago Bernabéu, Madrid", [6]string{"Vinícius Júnior", "Jude Bellingham", "Kylian Mbappé", "Federico Valverde", "Antonio Rüdiger", "Aurélien Tchouaméni"}},
	{"t-bar", "FC Barcelona", "BAR", "Estadi Olímpic Lluís Companys, Barcelona", [6]string{"Robert Lewandowski", "Pedri", "Lamine Yamal", "Raphinha", "Ronald Araújo", "Frenkie de Jong"}},
	{"t-bay", "FC Bayern München", "FCB", "Allianz Arena, Munich", [6]string{"Harry Kane", "Jamal Musiala", "Joshua Kimmich", "Leroy Sané", "Dayot Upamecano", "Thomas Müller"}},
	{"t-b04", "Bayer 04 Leverkusen", "B04", "BayArena, Leverkusen", [6]string{"Florian Wirtz", "Granit Xhaka", "Victor Boniface", "Jeremie Frimpong", "Alejandro Grimaldo", "Jonathan Tah"}},
	{"t-int", "Inter", "INT", "Stadio Giuseppe Meazza, Milan", [6]string{"Lautaro Martínez", "Nicolò Barella", "Hakan Çalhanoğlu", "Marcus Thuram", "Alessandro Bastoni", "Federico Dimarco"}},
	{"t-juv", "Juventus", "JUV", "Allianz Stadium, Turin", [6]string{"Dušan Vlahović", "Kenan Yıldız", "Manuel Locatelli", "Gleison Bremer", "Teun Koopmeiners", "Andrea Cambiaso"}},
	{"t-psg", "Paris Saint-Germain", "PSG", "Parc des Princes, Paris", [6]string{"Ousmane Dembélé", "Vitinha", "Achraf Hakimi", "Marquinhos", "Bradley Barcola", "Warren Zaïre-Emery"}},
	{"t-om", "Olympique de Marseille", "OM", "Orange Vélodrome, Marseille", [6]string{"Pierre-Emerick Aubameyang", "Jonathan Rowe", "Geoffrey Kondogbia", "Leonardo Balerdi", "Amine Harit", "Valentin Rongier"}},
	{"t-tot", "Tottenham Hotspur", "TOT", "Tottenham Hotspur Stadium, London", [6]string{"Son Heung-min", "James Maddison", "Cristian Romero", "Dejan Kulusevski", "Pedro Porro", "Micky van de Ven"}},
}

// events are the kinds of update, each with its commentary: %p is a
// player of the team concerned, %q another, %t the team's name.
var events = [...]struct{ kind, text string }{
	{"goal", "Goal! %p scores with a left-footed shot from the centre of the box to the bottom right corner. Assisted by %q."},
	{"goal", "Goal! %p heads home from very close range after a corner from %q. %t lead the way now."},
	{"shot_saved", "Attempt saved. %p right footed shot from outside the box is saved in the top centre of the goal."},
	{"shot_missed", "Attempt missed. %p tries a curling effort from the edge of the area, but it goes just wide of the left post."},
	{"corner", "Corner, %t. Conceded after a deflection; %q will take it from the right."},
	{"foul", "Foul by %p on the halfway line. %q wins a free kick in the defensive half."},
	{"yellow_card", "%p (%t) is shown the yellow card for a bad foul."},
	{"substitution", "Substitution, %t. %p replaces %q."},
	{"offside", "Offside, %t. %q tries a through ball, but %p is caught offside."},
	{"var_check", "VAR Decision: no penalty for %t after the referee reviewed a challenge on %p."},
	{"free_kick", "%p wins a free kick in the attacking half, just to the right of the penalty area."},
	{"injury", "Delay in match because of an injury to %p (%t). The physio comes on."},
}

var statuses = [...]string{"first_half", "first_half", "half_time", "second_half", "second_half", "second_half"}

// appendText appends an event's commentary with its names put in.
func appendText(dst []byte, text, p, q, team string) []byte {
	for i := 0; i < len(text); i++ {
		if text[i] == '%' && i+1 < len(text) {
			switch text[i+1] {
			case 'p':
				dst = append(dst, p...)
			case 'q':
				dst = append(dst, q...)
			case 't':
				dst = append(dst, team...)
			}
			i++
			continue
		}
		dst = append(dst, text[i])
	}
	return dst
}

// appendPair appends a statistic for both teams as [home,away].
func appendPair(dst []byte, key string, home, away int) []byte {
	dst = append(dst, ",\""...)
	dst = append(dst, key...)
	dst = append(dst, "\":["...)
	dst = strconv.AppendInt(dst, int64(home), 10)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(away), 10)
	return append(dst, ']')
}

// appendOdds appends decimal odds given in hundredths.
func appendOdds(dst []byte, key string, h int) []byte {
	dst = append(dst, ",\""...)
	dst = append(dst, key...)
	dst = append(dst, "\":"...)
	return appendPrice(dst, h)
}

// AppendScores appends message seq of the live-scores feed: between about
// 1 and 2 KB (2 to 5 recent events, latest first).
func AppendScores(dst []byte, seq uint64) []byte {
	r := rng(seq*0xD1B54A32D192ED03 + 7)
	r.next()
	comp := competitions[r.intn(len(competitions))]
	hi := r.intn(len(teams))
	ai := (hi + 1 + r.intn(len(teams)-1)) % len(teams)
	home, away := &teams[hi], &teams[ai]
	status := statuses[r.intn(len(statuses))]
	minute := 1 + r.intn(45)
	if status == "second_half" {
		minute += 45
	} else if status == "half_time" {
		minute = 45
	}
	hs, as := r.intn(1+minute/30), r.intn(1+minute/35)
	ms := int64(seq)*211 + int64(r.intn(1000))

	dst = append(dst, `{"type":"match_update","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"sentAt":"`...)
	dst = appendTime(dst, ms)
	dst = append(dst, `","sport":"football","competition":{"id":"`...)
	dst = append(dst, comp.id...)
	dst = append(dst, `","name":"`...)
	dst = append(dst, comp.name...)
	dst = append(dst, `","country":"`...)
	dst = append(dst, comp.country...)
	dst = append(dst, `","season":"2025/26","round":`...)
	dst = strconv.AppendInt(dst, int64(1+r.intn(34)), 10)
	dst = append(dst, `},"match":{"id":"m-`...)
	dst = strconv.AppendInt(dst, int64(400000+r.intn(100000)), 10)
	dst = append(dst, `","status":"`...)
	dst = append(dst, status...)
	dst = append(dst, `","minute":`...)
	dst = strconv.AppendInt(dst, int64(minute), 10)
	dst = append(dst, `,"venue":"`...)
	dst = append(dst, home.venue...)
	dst = append(dst, `","attendance":`...)
	dst = strconv.AppendInt(dst, int64(25000+r.intn(50000)), 10)
	for side, t := range [2]*struct {
		id, name, short, venue string
		players                [6]string
	}{home, away} {
		dst = append(dst, []string{`,"homeTeam":{"id":"`, `,"awayTeam":{"id":"`}[side]...)
		dst = append(dst, t.id...)
		dst = append(dst, `","name":"`...)
		dst = append(dst, t.name...)
		dst = append(dst, `","shortName":"`...)
		dst = append(dst, t.short...)
		dst = append(dst, `","score":`...)
		dst = strconv.AppendInt(dst, int64([2]int{hs, as}[side]), 10)
		dst = append(dst, '}')
	}
	dst = append(dst, `},"event":`...)
	dst = appendEvent(dst, &r, minute, home.name, away.name, &home.players, &away.players)
	dst = append(dst, `,"statistics":{"possession":`...)
	poss := 35 + r.intn(31)
	dst = append(dst, '[')
	dst = strconv.AppendInt(dst, int64(poss), 10)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(100-poss), 10)
	dst = append(dst, ']')
	shots, shotsAway := minute/6+r.intn(6), minute/8+r.intn(5)
	dst = appendPair(dst, "shots", shots, shotsAway)
	dst = appendPair(dst, "shotsOnTarget", shots/3+r.intn(2), shotsAway/3+r.intn(2))
	dst = appendPair(dst, "corners", r.intn(1+minute/10), r.intn(1+minute/12))
	dst = appendPair(dst, "fouls", r.intn(1+minute/6), r.intn(1+minute/6))
	dst = appendPair(dst, "yellowCards", r.intn(1+minute/40), r.intn(1+minute/35))
	dst = appendPair(dst, "redCards", 0, r.intn(2)*r.intn(2)*r.intn(2))
	dst = appendPair(dst, "passes", minute*5+r.intn(60), minute*4+r.intn(60))
	dst = append(dst, `},"recentEvents":[`...)
	n, m := 2+r.intn(4), minute
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
			m = max(1, m-1-r.intn(6))
		}
		dst = appendEvent(dst, &r, m, home.name, away.name, &home.players, &away.players)
	}
	dst = append(dst, `],"odds":{"bookmaker":"consensus"`...)
	dst = appendOdds(dst, "home", 110+r.intn(600))
	dst = appendOdds(dst, "draw", 250+r.intn(300))
	dst = appendOdds(dst, "away", 110+r.intn(900))
	return append(dst, "}}"...)
}

// appendEvent appends one match event with its commentary.
func appendEvent(dst []byte, r *rng, minute int, home, away string, hp, ap *[6]string) []byte {
	e := events[r.intn(len(events))]
	team, players, side := home, hp, "home"
	if r.intn(2) == 1 {
		team, players, side = away, ap, "away"
	}
	pi := r.intn(6)
	p, q := players[pi], players[(pi+1+r.intn(5))%6]
	dst = append(dst, `{"minute":`...)
	dst = strconv.AppendInt(dst, int64(minute), 10)
	if minute > 45 && minute < 50 || minute > 90 {
		dst = append(dst, `,"addedTime":`...)
		dst = strconv.AppendInt(dst, int64(r.intn(6)), 10)
	}
	dst = append(dst, `,"kind":"`...)
	dst = append(dst, e.kind...)
	dst = append(dst, `","team":"`...)
	dst = append(dst, side...)
	dst = append(dst, `","player":"`...)
	dst = append(dst, p...)
	dst = append(dst, `","text":"`...)
	dst = appendText(dst, e.text, p, q, team)
	return append(dst, `"}`...)
}
