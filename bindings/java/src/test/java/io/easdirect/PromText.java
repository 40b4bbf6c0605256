package io.easdirect;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Pattern;

/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for the tests. No maintained
 * Java parser of the format is on Maven Central (client_java's
 * prometheus-metrics-exposition-textformats only writes it), so this one follows the format's
 * specification and refuses what Prometheus' own parser (Go's expfmt.TextParser) refuses: a
 * line that does not end with '\n', a bad metric or label name, a bad escape or an unquoted
 * value, a duplicate label, a value that is not a Go float, a TYPE or HELP twice or a TYPE after
 * the family's samples, an unknown type, a family split in two, a sample given twice.
 */
final class PromText {
    record Sample(String name, Map<String, String> labels, double value) {}

    static final class Family {
        final String name;
        String type = "untyped";
        String help;
        final List<Sample> samples = new ArrayList<>();

        Family(String name) {
            this.name = name;
        }
    }

    private static final Pattern METRIC_NAME = Pattern.compile("[a-zA-Z_:][a-zA-Z0-9_:]*");
    private static final Pattern LABEL_NAME = Pattern.compile("[a-zA-Z_][a-zA-Z0-9_]*");
    private static final Pattern FLOAT = Pattern.compile(
            "[+-]?(?:(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf|NaN)");
    private static final Set<String> TYPES =
            Set.of("counter", "gauge", "histogram", "summary", "untyped");

    private final Map<String, Family> families = new LinkedHashMap<>();
    private final Set<String> typed = new java.util.HashSet<>();
    private final Set<String> helped = new java.util.HashSet<>();
    private final Set<String> seen = new java.util.HashSet<>();
    private String current;
    private int lineNo;

    private PromText() {}

    /** The families in order; throws IllegalArgumentException naming the line at fault. */
    static Map<String, Family> parse(String text) {
        PromText p = new PromText();
        if (!text.isEmpty() && !text.endsWith("\n")) {
            throw new IllegalArgumentException("the text does not end with a newline");
        }
        String body = text.isEmpty() ? "" : text.substring(0, text.length() - 1);
        for (String line : body.split("\n", -1)) {
            p.lineNo++;
            try {
                p.line(line);
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("line " + p.lineNo + " \"" + line + "\": "
                        + e.getMessage(), e);
            }
        }
        return p.families;
    }

    private void line(String line) {
        if (line.trim().isEmpty()) {
            return;
        }
        if (line.startsWith("#")) {
            String[] t = line.substring(1).trim().split("[ \t]+", 3);
            if (t.length >= 2 && (t[0].equals("HELP") || t[0].equals("TYPE"))) {
                String name = t[1];
                check(METRIC_NAME.matcher(name).matches(), "bad metric name " + name);
                Family f = family(name);
                if (t[0].equals("TYPE")) {
                    check(t.length == 3 && TYPES.contains(t[2]), "bad type");
                    check(typed.add(name), "a second TYPE for " + name);
                    check(f.samples.isEmpty(), "TYPE after the samples of " + name);
                    f.type = t[2];
                } else {
                    check(helped.add(name), "a second HELP for " + name);
                    f.help = t.length == 3 ? unescape(t[2], false) : "";
                }
            }
            return; // any other comment
        }
        int i = 0;
        int n = line.length();
        while (i < n && line.charAt(i) != '{' && line.charAt(i) != ' ' && line.charAt(i) != '\t') {
            i++;
        }
        String name = line.substring(0, i);
        check(METRIC_NAME.matcher(name).matches(), "bad metric name \"" + name + "\"");
        Map<String, String> labels = new TreeMap<>();
        if (i < n && line.charAt(i) == '{') {
            i++;
            for (;;) {
                i = skipBlanks(line, i);
                check(i < n, "unterminated labels");
                if (line.charAt(i) == '}') {
                    i++;
                    break;
                }
                int start = i;
                while (i < n && line.charAt(i) != '=' && line.charAt(i) != ' '
                        && line.charAt(i) != '\t') {
                    i++;
                }
                String label = line.substring(start, i);
                check(LABEL_NAME.matcher(label).matches(), "bad label name \"" + label + "\"");
                i = skipBlanks(line, i);
                check(i < n && line.charAt(i) == '=', "no '=' after " + label);
                i = skipBlanks(line, i + 1);
                check(i < n && line.charAt(i) == '"', "the value of " + label + " is not quoted");
                StringBuilder v = new StringBuilder();
                i++;
                for (;;) {
                    check(i < n, "unterminated value of " + label);
                    char ch = line.charAt(i++);
                    if (ch == '"') {
                        break;
                    }
                    if (ch == '\\') {
                        check(i < n, "a lone backslash");
                        char e = line.charAt(i++);
                        switch (e) {
                            case '\\' -> v.append('\\');
                            case '"' -> v.append('"');
                            case 'n' -> v.append('\n');
                            default -> throw new IllegalArgumentException("bad escape \\" + e);
                        }
                    } else {
                        v.append(ch);
                    }
                }
                check(labels.put(label, v.toString()) == null, "label " + label + " twice");
                i = skipBlanks(line, i);
                check(i < n, "unterminated labels");
                if (line.charAt(i) == ',') {
                    i++;
                } else {
                    check(line.charAt(i) == '}', "expected ',' or '}'");
                }
            }
        }
        check(i < n && (line.charAt(i) == ' ' || line.charAt(i) == '\t'), "no value");
        String[] rest = line.substring(i).trim().split("[ \t]+");
        check(rest.length == 1 || rest.length == 2, "more than a value and a timestamp");
        check(FLOAT.matcher(rest[0]).matches(), "bad value " + rest[0]);
        double value = Double.parseDouble(rest[0].replaceAll("^([+-]?)[Ii]nf$", "$1Infinity"));
        if (rest.length == 2) {
            Long.parseLong(rest[1]); // a timestamp in ms
        }
        Family f = family(base(name));
        check(seen.add(name + labels), "the sample " + name + labels + " twice");
        f.samples.add(new Sample(name, labels, value));
    }

    /** The family of a sample: histograms' and summaries' suffixes belong to the base name. */
    private String base(String name) {
        for (String suffix : new String[] {"_bucket", "_sum", "_count"}) {
            if (name.endsWith(suffix)) {
                String b = name.substring(0, name.length() - suffix.length());
                Family f = families.get(b);
                if (f != null && (f.type.equals("histogram") || f.type.equals("summary"))) {
                    return b;
                }
            }
        }
        return name;
    }

    private Family family(String name) {
        Family f = families.get(name);
        if (f == null) {
            f = new Family(name);
            families.put(name, f);
        } else {
            check(name.equals(current), "the family " + name + " is split in two");
        }
        current = name;
        return f;
    }

    private static int skipBlanks(String s, int i) {
        while (i < s.length() && (s.charAt(i) == ' ' || s.charAt(i) == '\t')) {
            i++;
        }
        return i;
    }

    private static String unescape(String s, boolean quotes) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch == '\\' && i + 1 < s.length()) {
                char e = s.charAt(++i);
                if (e == 'n') {
                    b.append('\n');
                } else if (e == '\\' || (quotes && e == '"')) {
                    b.append(e);
                } else {
                    b.append('\\').append(e);
                }
            } else {
                b.append(ch);
            }
        }
        return b.toString();
    }

    private static void check(boolean ok, String why) {
        if (!ok) {
            throw new IllegalArgumentException(why);
        }
    }
}
