// Picks instances of a service and prints them.
//
//   java -cp bindings/java/target/easdirect-0.1.0.jar examples/java/Pick.java TARGET [N]
//   e.g. TARGET = eas://1.2.3.4:8080/my_service or static://10.0.0.1:8000*3,10.0.0.2:8000
import io.easdirect.EasClient;
import io.easdirect.EasException;
import io.easdirect.Instance;
import java.time.Duration;

public class Pick {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: Pick TARGET [N]");
            System.exit(2);
        }
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 10;
        try (EasClient client = EasClient.open(args[0])) {
            client.waitReady(Duration.ofSeconds(5));
            System.out.println("libeasdirect " + EasClient.libraryVersion() + " via "
                    + EasClient.backend() + ", " + client.instances().size() + " instance(s)");
            for (int i = 0; i < n; i++) {
                Instance inst = client.select();
                System.out.printf("%-24s weight %-5d id %016x%n", inst.host(), inst.weight(),
                        inst.id());
            }
            System.out.println(client.stats());
        } catch (EasException e) {
            System.err.println("easdirect: " + e.status() + ": " + e.getMessage());
            System.exit(1);
        }
    }
}
