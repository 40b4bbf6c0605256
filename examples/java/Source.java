// Your own discovery source: the instances come from a file that something else keeps up to date
// (a sidecar, a config agent, a cron job), one "ip:port[*weight]" a line, read again at each
// refresh. A missing or unreadable file is a failed fetch: the client keeps the last list.
//
//   java -cp bindings/java/target/easdirect-0.1.0.jar examples/java/Source.java FILE [N]
import io.easdirect.EasClient;
import io.easdirect.EasException;
import io.easdirect.Endpoint;
import io.easdirect.Instance;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class Source {
    /** The endpoints listed in the file now (blank lines and lines starting with # skipped). */
    static List<Endpoint> read(Path file) throws Exception {
        List<Endpoint> list = new ArrayList<>();
        for (String line : Files.readAllLines(file)) {
            line = line.trim();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            long weight = Endpoint.DEFAULT_WEIGHT;
            int star = line.indexOf('*');
            if (star >= 0) {
                weight = Long.parseLong(line.substring(star + 1).trim());
                line = line.substring(0, star).trim();
            }
            int colon = line.lastIndexOf(':');
            list.add(Endpoint.of(line.substring(0, colon), Integer.parseInt(line.substring(colon + 1)),
                    weight));
        }
        return list;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: Source FILE [N]");
            System.exit(2);
        }
        Path file = Paths.get(args[0]);
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 10;
        try (EasClient client = EasClient.fromSource(() -> read(file),
                Collections.singletonMap("refresh_interval_ms", "1000"))) {
            client.waitReady(Duration.ofSeconds(5)); // TIMEOUT names the source's exception
            System.out.println("libeasdirect " + EasClient.libraryVersion() + " via "
                    + EasClient.backend() + ", " + client.instances().size() + " instance(s) from "
                    + file);
            for (int i = 0; i < n; i++) {
                Instance inst = client.select();
                System.out.printf("%-24s weight %-5d id %016x%n", inst.host(), inst.weight(),
                        inst.id());
            }
            client.lastError().ifPresent(e -> System.out.println("last fetch failed: " + e.getMessage()));
        } catch (EasException e) {
            System.err.println("easdirect: " + e.status() + ": " + e.getMessage());
            System.exit(1);
        }
    }
}
